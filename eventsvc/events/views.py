from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for
from flask_babel import get_locale

from .. import ical
from ..outbox.mail import calendar_event
from ..security import honeypot_tripped
from ..validators import has_control_characters

from ..errors import ServiceError
from ..page_cache import cached_page, recent_read, uncacheable
from ..registrations.forms import RegistrationForm
from ..registrations.services import register_by_slug, registration_refusal
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
    audience = (request.args.get("voor") or "").strip()[:100] or None
    if has_control_characters(audience):
        abort(400)  # no audience holds one, and PostgreSQL refuses a NUL outright
    now = utcnow()
    return cached_page(_upcoming_version(now, audience), lambda _holes: render_template(
        "events/upcoming.html", events=services.list_upcoming(now=now, audience=audience), audience=audience or ""),
        forms=False)  # its one form (the audience filter) is a GET


def _upcoming_version(now, audience=None) -> tuple:
    return recent_read(("upcoming", audience), lambda: services.upcoming_version(now=now, audience=audience))


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
    now = utcnow()
    body = cached_page(_upcoming_version(now), lambda _holes: ical.build_feed(
        [calendar_event(e) for e in services.list_upcoming(now=now)],
        name=current_app.config["SITE_NAME"], dtstamp=now), forms=False)
    response = _calendar_response(body, "bijeenkomsten.ics")
    response.headers["Content-Disposition"] = 'inline; filename="bijeenkomsten.ics"'
    # Calendar apps poll the feed: the same body gets the same ETag and a 304 answers them.
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/privacy")
def privacy():
    from ..pages.services import privacy_page

    return render_template("pages/privacy.html", page=privacy_page())


@bp.get("/e/<slug>")
def show(slug):
    # The same page for every anonymous visitor, rendered again only when the event changed.
    # A plain copy of the event's row tells whether it did (read at most once per
    # PAGE_CACHE_RECHECK_SECONDS for them); the mapped event is loaded only to render.
    snapshot = recent_read(("event", slug), lambda: services.get_public_event_snapshot(slug))
    if snapshot is None:
        abort(404)
    now, locale = utcnow(), get_locale()
    version = _page_version(snapshot, registration_refusal(snapshot, now), locale)

    def render(holes):
        event = _event_or_404(slug)
        refusal = registration_refusal(event, now)
        page = _render_show(event, RegistrationForm(), refusal, holes)
        # Changed since the snapshot was read: right for this visitor, wrong for `version`.
        return page if _page_version(event, refusal, locale) == version else uncacheable(page)

    return cached_page(version, render, places_left=snapshot.places_left)


def _page_version(event, refusal, locale) -> tuple:
    return services.event_page_version(event, locale), refusal and str(refusal)


# The form posts to the page's own URL; a separate endpoint, so only the post is rate limited.
@bp.post("/e/<slug>")
def register(slug):
    form = RegistrationForm()
    if form.validate_on_submit() and not honeypot_tripped(form):
        # The event is read inside the registration's own transaction: one read per form post.
        try:
            result = register_by_slug(slug, name=form.name.data, email=form.email.data,
                                      organisation=form.organisation.data or "", role=form.role.data or "",
                                      locale=str(get_locale()))
        except ServiceError as error:
            form.form_errors.append(str(error.message))
        else:
            if result is None:
                abort(404)
            session["registered"] = {"slug": slug, "status": result.shown_status, "email": form.email.data}
            return redirect(url_for("events.registered", slug=slug), 303)
    event = _event_or_404(slug)
    refusal = registration_refusal(event, utcnow())
    if honeypot_tripped(form) and not form.errors and not refusal:
        # A bot filled the field people never see: answer as if registered, write nothing.
        current_app.logger.info("honeypot filled on the form of %s", event.slug)
        session["registered"] = {"slug": slug, "email": form.email.data,
                                 "status": "waitlisted" if event.is_full else "confirmed"}
        return redirect(url_for("events.registered", slug=slug), 303)
    if refusal and not form.form_errors:
        form.form_errors.append(str(refusal))
    return _render_show(event, form, refusal, {"places_left": event.places_left}), 422


def _render_show(event, form, refusal, holes) -> str:
    return render_template("events/show.html", event=event, form=form, refusal=refusal, holes=holes,
                           calendar=calendar_links(event))


@bp.get("/e/<slug>/aangemeld")
def registered(slug):
    event = _event_or_404(slug)
    outcome = session.get("registered")
    if not outcome or outcome.get("slug") != slug:
        return redirect(url_for("events.show", slug=slug))
    return render_template("events/registered.html", event=event, outcome=outcome,
                           calendar=calendar_links(event))
