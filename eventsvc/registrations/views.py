"""The registrant's personal pages, reached only through the token in their mails."""

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from .. import ical
from ..outbox.mail import calendar_event
from ..urls import external_url
from ..types import utcnow
from . import services

bp = Blueprint("registrations", __name__, url_prefix="/r")


@bp.after_request
def keep_the_token_private(response):
    # The token is in the URL: never send it on to another site, never cache it.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _registration_or_404(token):
    registration = services.get_by_token(token)
    if registration is None:
        abort(404)
    return registration


@bp.get("/<token>")
def show(token):
    registration = _registration_or_404(token)
    feed = external_url("registrations.personal_feed", token=token)
    return render_template("registrations/show.html", registration=registration, event=registration.event,
                           webcal=feed.replace("https://", "webcal://").replace("http://", "webcal://"))


@bp.get("/<token>/agenda.ics")
def personal_calendar(token):
    registration = _registration_or_404(token)
    body = ical.build_personal_calendar(calendar_event(registration.event, registration), dtstamp=utcnow())
    return Response(body, mimetype="text/calendar", headers={
        "Content-Disposition": f'attachment; filename="{registration.event.slug}.ics"'})


@bp.get("/<token>/feed.ics")
def personal_feed(token):
    """All sessions of this registrant (same address), always at their current times.
    A backup for mail invites that a calendar did not pick up."""
    registration = _registration_or_404(token)
    entries = [calendar_event(r.event, r) for r in services.active_registrations_of(registration)]
    body = ical.build_feed(entries, name=current_app.config["SITE_NAME"], dtstamp=utcnow())
    return Response(body, mimetype="text/calendar")


@bp.route("/<token>/annuleren", methods=["GET", "POST"])
def cancel(token):
    registration = _registration_or_404(token)
    form = FlaskForm()
    if registration.is_cancelled:
        return redirect(url_for("registrations.show", token=token))
    if form.validate_on_submit():
        services.cancel_registration(registration)
        flash(_("Uw aanmelding is geannuleerd. U krijgt een bevestiging per e-mail."), "success")
        return redirect(url_for("registrations.show", token=token), 303)
    return render_template("registrations/cancel.html", registration=registration,
                           event=registration.event, form=form)


@bp.route("/<token>/nog-steeds", methods=["GET", "POST"])
def still_attending(token):
    registration = _registration_or_404(token)
    form = FlaskForm()
    if form.validate_on_submit() and registration.is_active:
        services.record_reschedule_response(registration, attending=True)
        flash(_("Dank u wel. We hebben genoteerd dat u er nog steeds bij bent."), "success")
        return redirect(url_for("registrations.show", token=token), 303)
    return render_template("registrations/still_attending.html", registration=registration,
                           event=registration.event, form=form)


@bp.route("/<token>/verwijderen", methods=["GET", "POST"])
def erase(token):
    """The registrant deletes their own data (after a confirmation step)."""
    from .privacy import erase_registration

    registration = _registration_or_404(token)
    form = FlaskForm()
    if form.validate_on_submit():
        title = registration.event.title
        erase_registration(registration)
        return render_template("registrations/erased.html", title=title)
    return render_template("registrations/erase.html", registration=registration, event=registration.event,
                           form=form)


@bp.get("/<token>/join")
def join(token):
    """Redirect to the secret join URL, only within the join window and only for a confirmed seat."""
    registration = _registration_or_404(token)
    event, now = registration.event, utcnow()
    opens_at = services.join_opens_at(event)
    state = services.join_state(registration, now=now, opens_at=opens_at)
    if state == "open":
        services.record_join(registration, now=now)
        return redirect(event.join_url, 303)
    return render_template("registrations/join.html", registration=registration, event=event,
                           state=state, opens_at=opens_at), 200 if state == "not_yet" else 403
