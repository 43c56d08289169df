"""Render an outbox row into an email, from the current state of the database.

Each mail: multipart/mixed → (multipart/alternative → text/plain, text/html,
text/calendar; method=…) + the same calendar as invite.ics, the shape Google
Calendar itself sends. Text parts go quoted-printable, never raw 8bit.
"""
import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from flask import current_app, render_template
from flask_babel import force_locale, gettext as _

from .. import ical
from ..formatting import format_moment, format_when
from ..types import utcnow
from ..urls import external_url, mail_domain
from ..validators import has_control_characters

# kind → (subject, calendar method or None)
_REQUEST, _CANCEL = "REQUEST", "CANCEL"


def _subjects():
    return {
        "confirmation": (_("Bevestiging: %(title)s"), _REQUEST),
        "waitlisted": (_("Wachtlijst: %(title)s"), None),
        "already_registered": (_("U bent al aangemeld: %(title)s"), _REQUEST),
        "promoted": (_("Er is een plaats voor u: %(title)s"), _REQUEST),
        "rescheduled": (_("Gewijzigd: %(title)s"), _REQUEST),
        "cancelled": (_("Geannuleerd: %(title)s"), _CANCEL),
        "registration_cancelled": (_("Afmelding bevestigd: %(title)s"), _CANCEL),
        "reminder": (_("Uw link voor %(title)s"), _REQUEST),
        "day_before": (_("Morgen: %(title)s"), _REQUEST),
        "custom": ("%(subject)s", None),
    }


def _clean(value: str) -> str:
    """Header text on one line, whatever was stored."""
    return " ".join("".join(" " if has_control_characters(ch) else ch for ch in value or "").split())


def _address(name: str, addr: str) -> Address:
    username, _, domain = addr.strip().rpartition("@")
    return Address(display_name=_clean(name), username=username, domain=domain)


def organizer_of(event) -> ical.Person:
    """The invite's organiser: the contact person, else the service's sender address."""
    sender_name, sender_addr = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    if event.contact_email:
        return ical.Person(event.contact_name or event.organised_by or sender_name, event.contact_email)
    return ical.Person(sender_name or current_app.config["SITE_NAME"], sender_addr)


def calendar_event(event, registration=None) -> ical.CalendarEvent:
    """The event as a calendar entry; with a registration, carrying its personal links."""
    page = external_url("events.show", slug=event.slug)
    location = event.location if event.mode == "onsite" else ""
    description = event.summary or event.title
    if registration is not None:
        personal = external_url("registrations.show", token=registration.token)
        if event.is_online:
            join = external_url("registrations.join", token=registration.token)
            location = join if event.mode == "online" else f"{event.location} / {join}".strip(" /")
            description += "\n\n" + _("Deelnemen (uw persoonlijke link): %(url)s", url=join)
        description += "\n\n" + _("Uw aanmelding bekijken of annuleren: %(url)s", url=personal)
    return ical.CalendarEvent(
        uid=event.uid, sequence=event.sequence, summary=event.title, description=description,
        location=location, url=page, starts_at=event.starts_at, ends_at=event.ends_at,
        tzid=event.timezone, cancelled=event.is_cancelled)


def render(message) -> EmailMessage | None:
    """The email for this outbox row, or None when there is nothing to send any more."""
    registration = message.registration
    if registration is None:
        return None
    with force_locale(registration.locale or "nl"):
        return _render(message, registration, registration.event)


def _render(message, registration, event):
    subject_template, method = _subjects()[message.kind]
    if message.kind in ("already_registered", "cancelled") and registration.is_waitlisted:
        method = None  # nothing of this event is in their calendar
    context = _context(message, registration, event)
    subject = subject_template % {"title": event.title, "subject": message.payload.get("subject", "")}
    mail = EmailMessage(policy=email.policy.SMTP)
    sender_name, sender_addr = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    mail["From"] = _address(sender_name, sender_addr)
    mail["To"] = _address(registration.name, registration.email)
    if event.contact_email:
        mail["Reply-To"] = _address(event.contact_name, event.contact_email)
    mail["Subject"] = _clean(subject)
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = f"<{message.message_id.replace(':', '.')}@{mail_domain()}>"  # a colon is not valid in a msg-id
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(render_template(f"mail/{message.kind}.txt", **context), cte="quoted-printable")
    mail.add_alternative(render_template(f"mail/{message.kind}.html", **context), subtype="html",
                         cte="quoted-printable")
    if method:
        _attach_invite(mail, event, registration, method)
    # Fold headers only past 998 characters: CPython's folder can drop the space
    # before a non-ASCII word when it wraps a long Subject (python/cpython#144156).
    mail.policy = email.policy.SMTP.clone(max_line_length=998)
    return mail


def _context(message, registration, event):
    locale = registration.locale or "nl"
    links = {name: external_url(f"registrations.{endpoint}", token=registration.token)
             for name, endpoint in (("personal", "show"), ("cancel", "cancel"), ("still", "still_attending"))}
    if event.is_online:
        links["join"] = external_url("registrations.join", token=registration.token)
    change = None
    if message.payload.get("change_id"):
        change = next((c for c in event.changes if c.id == message.payload["change_id"]), None)
    return dict(
        message=message, registration=registration, event=event, links=links, change=change,
        when=format_when(event.starts_at, event.ends_at, event.tz, locale),
        old_when=format_when(change.old_starts_at, change.old_ends_at, event.tz, locale) if change else None,
        event_url=external_url("events.show", slug=event.slug), payload=message.payload,
        join_opens=format_moment(event.starts_at - _join_window(), event.tz, locale),
    )


def _join_window():
    from datetime import timedelta

    return timedelta(minutes=current_app.config["JOIN_WINDOW_MINUTES"])


def _attach_invite(mail, event, registration, method):
    organizer = organizer_of(event)
    if organizer.email.strip().lower() == registration.email.strip().lower():
        # The registrant organises this event: the service's own mailbox organises the invite.
        sender_name, sender_addr = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
        organizer = ical.Person(sender_name or current_app.config["SITE_NAME"], sender_addr)
    calendar = ical.build_invite(
        calendar_event(event, registration), method=method, organizer=organizer,
        attendee=ical.Person(registration.name, registration.email), dtstamp=utcnow())
    mail.add_alternative(calendar, maintype="text", subtype="calendar", cte="base64",
                         params={"method": method, "charset": "UTF-8"})
    mail.make_mixed()
    mail.add_attachment(calendar, maintype="application", subtype="ics", filename="invite.ics")
