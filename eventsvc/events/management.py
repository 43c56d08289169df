"""What organisers do with events: create, edit, publish, reschedule, cancel.

Each function is one unit of work. Notices to registrants are queued in the
same transaction as the change (invariant 2), one per registrant per state:
the dedupe key carries the event's sequence.
"""
import re
import secrets
import unicodedata
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update

from ..errors import ServiceError
from ..extensions import db
from ..outbox.models import Message
from ..outbox.services import enqueue_for_registrants, supersede_pending
from ..registrations.models import Registration
from ..registrations.reminders import queue_reminders_for_event
from ..registrations.services import _lock_event, promote_next
from ..transaction import unit_of_work
from ..types import utcnow
from ..webhooks import services as webhooks
from .models import Event, EventChange

EDITABLE = ("title", "summary", "description", "audience", "region", "organised_by", "contact_name",
            "contact_email", "mode", "location", "join_url", "timezone", "starts_at", "ends_at", "capacity",
            "registration_opens_at", "registration_closes_at", "reminder_lead_minutes", "day_before_reminder")
# Kinds that a new schedule or a cancellation makes obsolete while unsent.
SCHEDULE_KINDS = ("rescheduled", "reminder", "day_before")


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:80] or "bijeenkomst"


def _unique_slug(title: str) -> str:
    base = slugify(title)
    slug, n = base, 2
    while db.session.scalar(select(Event.id).where(Event.slug == slug)) is not None:
        slug, n = f"{base}-{n}", n + 1
    return slug


def _check_times(starts_at: datetime, ends_at: datetime) -> None:
    if ends_at <= starts_at:
        raise ServiceError(_l("Het einde moet na het begin liggen."), field="ends_at")


def create_event(**fields) -> Event:
    def work():
        _check_times(fields["starts_at"], fields["ends_at"])
        event = Event(slug=_unique_slug(fields["title"]), status="draft",
                      **{k: v for k, v in fields.items() if k in EDITABLE})
        db.session.add(event)
        db.session.flush()
        return event

    return unit_of_work(work)


def update_event(event: Event, *, now: datetime | None = None, **fields) -> Event:
    """Edit an event. A change of time goes through `reschedule_event` (it tells people)."""
    now = now or utcnow()

    def work():
        _lock_event(event)
        db.session.refresh(event)
        capacity = fields.get("capacity", event.capacity)
        if capacity is not None and capacity < event.confirmed_count:
            raise ServiceError(_l("De capaciteit kan niet lager zijn dan het aantal aanmeldingen (%(n)d).",
                                  n=event.confirmed_count), field="capacity")
        _check_times(fields.get("starts_at", event.starts_at), fields.get("ends_at", event.ends_at))
        place_changed = any(fields.get(k, getattr(event, k)) != getattr(event, k) for k in ("location", "mode"))
        for key, value in fields.items():
            if key in EDITABLE:
                setattr(event, key, value)
        if place_changed:
            event.sequence += 1
        db.session.flush()
        _fill_free_seats(event, now)
        return event

    return unit_of_work(work)


def _fill_free_seats(event: Event, now: datetime) -> None:
    while promote_next(event, now=now) is not None:
        db.session.refresh(event)


def publish_event(event: Event) -> Event:
    def work():
        if event.is_cancelled:
            raise ServiceError(_l("Een geannuleerde bijeenkomst kan niet opnieuw worden gepubliceerd."))
        if event.mode in ("online", "hybrid") and not event.join_url:
            raise ServiceError(_l("Vul eerst de link voor deelname in; een online bijeenkomst heeft die nodig."),
                               field="join_url")
        event.status = "published"
        return event

    return unit_of_work(work)


def unpublish_event(event: Event) -> Event:
    def work():
        if event.is_cancelled:
            raise ServiceError(_l("Deze bijeenkomst is geannuleerd."))
        if db.session.scalar(select(func.count()).select_from(Registration).where(
                Registration.event_id == event.id, Registration.status != "cancelled")):
            raise ServiceError(_l("Er zijn al aanmeldingen; annuleer de bijeenkomst in plaats van haar te verbergen."))
        event.status = "draft"
        return event

    return unit_of_work(work)


def duplicate_event(event: Event) -> Event:
    fields = {k: getattr(event, k) for k in EDITABLE}
    fields["title"] = f"{event.title} (kopie)"
    return create_event(**fields)


def reschedule_event(event: Event, *, starts_at: datetime, ends_at: datetime, reason: str,
                     by=None, now: datetime | None = None) -> int:
    """Move the event and tell every registrant. Returns the number of notices queued."""
    now = now or utcnow()

    def work():
        _lock_event(event)
        db.session.refresh(event)
        if event.is_cancelled:
            raise ServiceError(_l("Deze bijeenkomst is geannuleerd en kan niet worden verplaatst."))
        _check_times(starts_at, ends_at)
        if starts_at <= now:
            raise ServiceError(_l("Het nieuwe begin ligt in het verleden."), field="starts_at")
        if not (reason or "").strip():
            raise ServiceError(_l("Vermeld de reden van de verplaatsing."), field="reason")
        if (starts_at, ends_at) == (event.starts_at, event.ends_at):
            raise ServiceError(_l("De bijeenkomst staat al op dit tijdstip; er is niemand bericht gestuurd."),
                               field="starts_at")
        change = _record_change(event, "rescheduled", reason, by, now, starts_at, ends_at)
        event.starts_at, event.ends_at = starts_at, ends_at
        db.session.flush()
        # A newer schedule replaces every unsent notice about an older one.
        supersede_pending(event_id=event.id, kinds=SCHEDULE_KINDS)
        # Only the rows that hold an answer: rewriting all of them (100,000 new row versions
        # on PostgreSQL) would cost more than the whole rest of the reschedule.
        db.session.execute(update(Registration)
                           .where(Registration.event_id == event.id,
                                  Registration.reschedule_response.is_not(None)
                                  | Registration.reschedule_response_at.is_not(None))
                           .values(reschedule_response=None, reschedule_response_at=None))
        queued = enqueue_for_registrants(event, "rescheduled", {"change_id": change.id}, now)
        queue_reminders_for_event(event, now=now)
        webhooks.emit("event.rescheduled", event=event, subject=f"{event.id}:{event.sequence}",
                      data=webhooks.event_data(event), now=now)
        return queued

    return unit_of_work(work)


def cancel_event(event: Event, *, reason: str, by=None, now: datetime | None = None) -> int:
    """Cancel the event: METHOD:CANCEL to every registrant, registration closes."""
    now = now or utcnow()

    def work():
        _lock_event(event)
        db.session.refresh(event)
        if event.is_cancelled:
            raise ServiceError(_l("Deze bijeenkomst is al geannuleerd."))
        if not (reason or "").strip():
            raise ServiceError(_l("Vermeld de reden van de annulering."), field="reason")
        change = _record_change(event, "cancelled", reason, by, now, None, None)
        event.status = "cancelled"
        db.session.flush()
        supersede_pending(event_id=event.id, kinds=(*SCHEDULE_KINDS, "confirmation", "promoted",
                                                    "waitlisted", "already_registered"))
        webhooks.emit("event.cancelled", event=event, subject=f"{event.id}:{event.sequence}",
                      data=webhooks.event_data(event), now=now)
        return enqueue_for_registrants(event, "cancelled", {"change_id": change.id}, now)

    return unit_of_work(work)


def _record_change(event, kind, reason, by, now, new_starts_at, new_ends_at) -> EventChange:
    event.sequence += 1
    change = EventChange(event_id=event.id, kind=kind, old_starts_at=event.starts_at, old_ends_at=event.ends_at,
                         new_starts_at=new_starts_at, new_ends_at=new_ends_at, reason=reason.strip(),
                         changed_by_id=getattr(by, "id", None), changed_at=now, sequence=event.sequence)
    db.session.add(change)
    db.session.flush()
    return change


def message_registrants(event: Event, *, subject: str, body: str, include_waitlist: bool = False,
                        now: datetime | None = None) -> int:
    """Queue the organiser's own message to every confirmed registrant (and the waiting list)."""
    now = now or utcnow()
    if not subject.strip() or not body.strip():
        raise ServiceError(_l("Vul een onderwerp en een tekst in."))
    statuses = ("confirmed", "waitlisted") if include_waitlist else ("confirmed",)
    payload = {"subject": subject.strip(), "body": body.strip()}
    return unit_of_work(lambda: enqueue_for_registrants(event, "custom", payload, now, statuses=statuses,
                                                        state=secrets.token_hex(8)))


def retry_failed(event: Event, *, message_id: int | None = None, now: datetime | None = None) -> int:
    """Put failed notices back in the queue, with fresh attempts."""
    now = now or utcnow()
    statement = update(Message).where(Message.event_id == event.id, Message.status == "failed")
    if message_id is not None:
        statement = statement.where(Message.id == message_id)
    return unit_of_work(lambda: db.session.execute(
        statement.values(status="pending", attempts=0, send_after=now, locked_until=None,
                         locked_by=None)).rowcount)
