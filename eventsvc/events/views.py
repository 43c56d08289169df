from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from flask_babel import get_locale

from .. import ical
from ..outbox.mail import calendar_event
from ..security import honeypot_tripped

from ..errors import ServiceError
from ..registrations.forms import RegistrationForm
from ..registrations.services import register, registration_refusal
from ..types import utcnow
from . import services

bp = Blueprint("events", __name__)


def _event_or_404(slug):
    event = services.get_public_event(slug)
    if event is None:
        abort(404)
    return event


@bp.get("/")
def upcoming():
    audience = (request.args.get("voor") or "").strip()[:100]
    events = services.list_upcoming(audience=audience or None)
    return render_template("events/upcoming.html", events=events, audience=audience)


def calendar_links(event) -> dict:
    """'Add to calendar' links for the public event: no personal data, no join URL."""
    entry = calendar_event(event)
    details = f"{event.summary}\n\n{entry.url}".strip()
    return {"ics": url_for("events.calendar", slug=event.slug),
            "google": ical.google_calendar_url(entry, details),
            "outlook": ical.outlook_calendar_url(entry, details)}


def _calendar_response(body: bytes, filename: str) -> Response:
    return Response(body, mimetype="text/calendar", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "public, max-age=300"})


@bp.get("/e/<slug>/agenda.ics")
def calendar(slug):
    event = _event_or_404(slug)
    return _calendar_response(ical.build_personal_calendar(calendar_event(event), dtstamp=utcnow()),
                              f"{event.slug}.ics")


@bp.get("/feed.ics")
def feed():
    """Every published upcoming event, METHOD:PUBLISH; cancelled ones as STATUS:CANCELLED."""
    from flask import current_app

    events = [calendar_event(e) for e in services.list_upcoming()]
    body = ical.build_feed(events, name=current_app.config["SITE_NAME"], dtstamp=utcnow())
    response = _calendar_response(body, "bijeenkomsten.ics")
    response.headers["Content-Disposition"] = 'inline; filename="bijeenkomsten.ics"'
    return response


@bp.get("/privacy")
def privacy():
    from ..pages.services import privacy_page

    return render_template("pages/privacy.html", page=privacy_page())


@bp.route("/e/<slug>", methods=["GET", "POST"])
def show(slug):
    event = _event_or_404(slug)
    form = RegistrationForm()
    refusal = registration_refusal(event, utcnow())
    if request.method == "POST":
        if refusal:
            form.form_errors.append(str(refusal))
        elif form.validate_on_submit():
            if honeypot_tripped(form):
                # A bot filled the field people never see: answer as if registered, write nothing.
                current_app.logger.info("honeypot filled on the form of %s", event.slug)
                session["registered"] = {"slug": event.slug, "email": form.email.data,
                                         "status": "waitlisted" if event.is_full else "confirmed"}
                return redirect(url_for("events.registered", slug=event.slug), 303)
            try:
                result = register(event, name=form.name.data, email=form.email.data,
                                  organisation=form.organisation.data or "", role=form.role.data or "",
                                  locale=str(get_locale()))
            except ServiceError as error:
                form.form_errors.append(str(error.message))
            else:
                session["registered"] = {"slug": event.slug, "status": result.shown_status,
                                         "email": form.email.data}
                return redirect(url_for("events.registered", slug=event.slug), 303)
        return render_template("events/show.html", event=event, form=form, refusal=refusal,
                               calendar=calendar_links(event)), 422
    return render_template("events/show.html", event=event, form=form, refusal=refusal,
                           calendar=calendar_links(event))


@bp.get("/e/<slug>/aangemeld")
def registered(slug):
    event = _event_or_404(slug)
    outcome = session.get("registered")
    if not outcome or outcome.get("slug") != slug:
        return redirect(url_for("events.show", slug=slug))
    return render_template("events/registered.html", event=event, outcome=outcome,
                           calendar=calendar_links(event))
