"""Render an outbox row into an email, from the current state of the database.

Each mail: multipart/mixed → (multipart/alternative → text/plain, text/html,
text/calendar; method=…) + the same calendar as invite.ics, the shape Google
Calendar itself sends. Text parts go quoted-printable, the calendar base64,
never raw 8bit.

Built with the classic email.mime classes: the modern EmailMessage API parses
every header it sets into objects, which cost more than all the rest of a
message in a fan-out of thousands.
"""
from email import encoders
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.message import Message as MimeMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr

from flask import current_app, render_template
from flask_babel import force_locale, gettext as _

from .. import ical
from ..formatting import format_moment, format_when
from ..registrations.services import join_opens_at
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


def _charset(encoding) -> Charset:
    charset = Charset("utf-8")
    charset.header_encoding, charset.body_encoding = QP, encoding
    return charset


_TEXT, _BINARY = _charset(QP), _charset(BASE64)


def _address(name: str, addr: str) -> str:
    """`"Name" <addr>`, the name RFC 2047-encoded when it is not ASCII."""
    return formataddr((_clean(name), addr.strip()), charset="utf-8")


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


def render(message) -> MimeMessage | None:
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
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(render_template(f"mail/{message.kind}.txt", **context), "plain", _TEXT))
    body.attach(MIMEText(render_template(f"mail/{message.kind}.html", **context), "html", _TEXT))
    mail = body
    if method:
        mail = _with_invite(body, event, registration, method)
    sender_name, sender_addr = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    mail["From"] = _address(sender_name, sender_addr)
    mail["To"] = _address(registration.name, registration.email)
    if event.contact_email:
        mail["Reply-To"] = _address(event.contact_name, event.contact_email)
    # The classic Header folds encoded words without losing spaces (the modern
    # folder can drop one before a non-ASCII word: python/cpython#144156).
    mail["Subject"] = Header(_clean(subject), "utf-8")
    mail["Date"] = format_datetime(utcnow())
    mail["Message-ID"] = f"<{message.message_id.replace(':', '.')}@{mail_domain()}>"  # a colon is not valid in a msg-id
    mail["Auto-Submitted"] = "auto-generated"
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
        join_opens=format_moment(join_opens_at(event), event.tz, locale),
    )


def _with_invite(body, event, registration, method) -> MIMEMultipart:
    organizer = organizer_of(event)
    if organizer.email.strip().lower() == registration.email.strip().lower():
        # The registrant organises this event: the service's own mailbox organises the invite.
        sender_name, sender_addr = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
        organizer = ical.Person(sender_name or current_app.config["SITE_NAME"], sender_addr)
    calendar = ical.build_invite(
        calendar_event(event, registration), method=method, organizer=organizer,
        attendee=ical.Person(registration.name, registration.email), dtstamp=utcnow())
    inline = MIMEText(calendar.decode("utf-8"), "calendar", _BINARY)
    inline.set_param("method", method)
    body.attach(inline)
    attachment = MIMEBase("application", "ics", name="invite.ics")
    attachment.set_payload(calendar)
    encoders.encode_base64(attachment)
    attachment.add_header("Content-Disposition", "attachment", filename="invite.ics")
    mixed = MIMEMultipart("mixed")
    mixed.attach(body)
    mixed.attach(attachment)
    return mixed
