"""Registering and cancelling: the rules for seats and the waiting list.

Invariant 1 (no overbooking): a seat is taken only by the conditional UPDATE in
`_take_seat`, which the database evaluates atomically against the current row.
Every function here is one unit of work: it commits on success and rolls back
on any refusal or error, so nothing is ever half-written.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, insert, select, update

from ..errors import NotFound, ServiceError
from ..events.models import Event, EventSnapshot
from ..events.services import possible_slug
from ..extensions import db
from ..formatting import current_locale, format_moment
from ..observability import count_registration
from ..prepared import Prepared
from ..security import ADDRESS_CAP_MESSAGE, recent_registrations_of_address, registrations_per_address_allowed
from ..transaction import unit_of_work, unit_of_work_on_connection
from ..types import utcnow
from .models import Registration, new_token
from . import notifications
from ..webhooks import services as webhooks
from ..webhooks.models import Webhook


@dataclass(frozen=True)
class RegistrationResult:
    registration_id: int
    # What the person at the keyboard is told: "confirmed" or "waitlisted".
    # For a repeat registration this is what a newcomer would have got, so the
    # page never reveals whether an address was registered before.
    shown_status: str
    repeat: bool = False

    @property
    def registration(self) -> Registration:
        """The registration as it is now, loaded when asked for (the form and the API need only
        shown_status, and building the mapped object costs as much as its INSERT)."""
        return db.session.get(Registration, self.registration_id)


class NewRegistration(SimpleNamespace):
    """A registration row just written with a plain INSERT: its columns as attributes, and
    `event`, the snapshot it was registered for. Not in the session; the notices and the
    webhook read it as they read a mapped Registration."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def registration_refusal(event: Event, now: datetime):
    """Why registration is closed right now, or None when it is open."""
    if event.is_cancelled:
        return _l("Deze bijeenkomst is geannuleerd; aanmelden is niet meer mogelijk.")
    if not event.is_published:
        return _l("Aanmelden voor deze bijeenkomst is nog niet mogelijk.")
    if event.has_started(now):
        return _l("Deze bijeenkomst is al begonnen of voorbij; aanmelden is niet meer mogelijk.")
    if event.registration_opens_at and now < event.registration_opens_at:
        return _l("Aanmelden kan vanaf %(when)s.",
                  when=format_moment(event.registration_opens_at, event.tz, current_locale()))
    if event.registration_closes_at and now >= event.registration_closes_at:
        return _l("De aanmelding voor deze bijeenkomst is gesloten.")
    return None


def register(event: Event, *, name: str, email: str, organisation: str = "", role: str = "",
             locale: str = "nl", now: datetime | None = None) -> RegistrationResult:
    """Register `email` for `event`, confirmed if a seat is free, else on the waiting list."""
    event_id = event.id  # the event itself is read again inside the transaction

    def work(connection, now):
        context = _read_context(connection, _CONTEXT_BY_ID, _context_params(email, now, event_id=event_id))
        if context is None:  # deleted since the caller read it
            raise NotFound(_l("Deze bijeenkomst bestaat niet meer."))
        return _register(connection, context, name=name, email=email, organisation=organisation, role=role,
                         locale=locale, now=now)
    return _counted(work, now)


def register_by_slug(slug: str, *, name: str, email: str, organisation: str = "", role: str = "",
                     locale: str = "nl", now: datetime | None = None) -> RegistrationResult | None:
    """register() for the public form: the event is read once, inside the write transaction.
    None when no public event has this slug."""
    if not possible_slug(slug):
        return None

    def work(connection, now):
        context = _read_context(connection, _CONTEXT_BY_SLUG, _context_params(email, now, slug=slug))
        return context and _register(connection, context, name=name, email=email, organisation=organisation,
                                     role=role, locale=locale, now=now)
    return _counted(work, now)


class _NeedsTheSession(Exception):
    """The registration needs the mapped registration the address already has (to revive it, or
    to answer a repeat): run it again in a unit of work with the ORM session."""


def _counted(work, now: datetime | None) -> RegistrationResult | None:
    """Run `work(connection, now)` as one unit of work, and count its outcome.

    Most registrations are new rows for an address not seen before: their statements run on a
    Core connection, without the ORM session (transaction.unit_of_work_on_connection). The rest
    start over with the session, whose connection `work` then gets."""
    now = now or utcnow()
    # A unique-constraint clash means the same address registered at the same
    # moment; the retry then sees that row and treats this as a repeat.
    try:
        try:
            result = unit_of_work_on_connection(lambda connection: work(connection, now), retry_integrity=True)
        except _NeedsTheSession:
            result = unit_of_work(lambda: work(db.session.connection(), now), retry_integrity=True)
    except ServiceError:
        count_registration("refused")
        raise
    if result is not None:
        # Counted after the commit, so a retried transaction is counted once.
        count_registration("already_registered" if result.repeat else result.shown_status)
    return result


def _register(connection, context, *, name, email, organisation, role, locale, now):
    event, existing_id, recent_of_address, any_webhook = context
    refusal = registration_refusal(event, now)
    if refusal:
        raise ServiceError(refusal)
    if existing_id is not None and not _is_the_sessions(connection):
        raise _NeedsTheSession
    key = normalize_email(email)
    # Locked (PostgreSQL): of two posts that revive the same cancelled registration at once
    # (a double click), the second waits here and then finds it active, a repeat.
    existing = db.session.get(Registration, existing_id, with_for_update=True, populate_existing=True) \
        if existing_id is not None else None
    if existing is not None and existing.is_active:
        notifications.notify_already_registered(existing, now=now)
        event = _read_event(event.id)  # as it is now: the lock above may have waited for another post
        return RegistrationResult(existing.id, "waitlisted" if event.is_full else "confirmed", repeat=True)
    if not registrations_per_address_allowed(key, now, recent=recent_of_address):
        raise ServiceError(ADDRESS_CAP_MESSAGE, field="email")

    values = dict(name=name, email=email.strip(), organisation=organisation, role=role, locale=locale,
                  registered_at=now, consent_at=now, cancelled_at=None, status="confirmed", waitlisted_at=None,
                  reschedule_response=None, reschedule_response_at=None)
    registration = _revive(existing, values) if existing is not None else _insert(connection, event, key, values)
    # The row and a confirmed registrant's notices are written before the seat is taken: on
    # PostgreSQL the seat's UPDATE locks the event's row, which every registration for the
    # event writes, until the commit; so the lock covers that UPDATE and the commit alone.
    # Without a seat (the rarer case), the notices are taken back before anyone could see them.
    queued = notifications.notify_confirmed(registration, event, now=now, connection=connection)
    if not _take_seat(event, newcomer=True, connection=connection):
        _mark_waitlisted(connection, registration, now)
        notifications.retract(registration, queued, connection=connection)
        notifications.notify_waitlisted(registration, now=now, connection=connection)
    if any_webhook:
        webhooks.emit("registration.created", event=event, data=webhooks.registration_data(registration),
                      subject=f"{registration.id}:{registration.registered_at:%Y%m%dT%H%M%S%f}", now=now,
                      connection=connection)
    return RegistrationResult(registration.id, registration.status)


def _is_the_sessions(connection) -> bool:
    """Whether `connection` is the ORM session's, so that mapped objects load and flush in its transaction."""
    session = db.session()
    return session.in_transaction() and session.connection() is connection


def _mark_waitlisted(connection, registration, now: datetime) -> None:
    registration.status, registration.waitlisted_at = "waitlisted", now  # a revived one: flushed at the commit
    if isinstance(registration, NewRegistration):
        _MARK_WAITLISTED.rowcount(connection, {"registration_id": registration.id, "waitlisted_at": now})


def _revive(registration: Registration, values: dict) -> Registration:
    for column, value in values.items():
        setattr(registration, column, value)
    db.session.flush()
    return registration


def _insert(connection, event: EventSnapshot, email_normalized: str, values: dict) -> NewRegistration:
    """A new registration's row, written with one plain INSERT.

    Not built as a mapped object: the ORM's flush of a new object, or even building one and
    attaching it, costs several times the INSERT itself, and on SQLite this runs while the
    process holds the database's only write lock (transaction.py)."""
    values = dict(values, event_id=event.id, email_normalized=email_normalized, token=new_token(),
                  first_joined_at=None)
    values["id"] = _INSERT_REGISTRATION.first(connection, values)["id"]
    return NewRegistration(**values, event=event)


def _read_context(connection, statement, params: dict) -> tuple | None:
    """(event, existing_id, recent_of_address, any_webhook), or None when there is no such event.

    The event comes as a plain copy of its row (EventSnapshot, with the same rules): read
    on the driver (prepared.py), because loading the mapped event costs several times the
    query, and on SQLite this runs while the process holds the database's only write lock."""
    values = statement.first(connection, params)
    if values is None:
        return None
    return (EventSnapshot({key: values[key] for key in _EVENT_COLUMNS}),
            values["existing_id"], values["recent_of_address"], values["any_webhook"])


def _read_event(event_id: int) -> EventSnapshot:
    return EventSnapshot(db.session.connection().execute(_EVENT_BY_ID, {"event_id": event_id}).one()._mapping)


def _context_params(email: str, now: datetime, **where) -> dict:
    return {"email": normalize_email(email), "since": now - timedelta(hours=1), **where}


# Built once (see events.services): every form post runs these. Everything a registration
# decides on is read in one statement, inside its transaction: the event; the id of this
# address's registration for it, if any; how often the address registered in the last hour
# (the per-address cap); and whether any webhook is active at all (else none is asked).
_CONTEXT = (
    select(Registration.id).where(Registration.event_id == Event.id,
                                  Registration.email_normalized == bindparam("email"))
    .scalar_subquery().label("existing_id"),
    recent_registrations_of_address().scalar_subquery().label("recent_of_address"),
    select(Webhook.id).where(Webhook.is_active.is_(True)).exists().label("any_webhook"),
)
# The columns the rules of a registration read (registration_refusal, is_full, the reminders):
# not the texts, which cost the most to fetch and convert, and are not needed here.
_EVENT_COLUMNS = ("id", "slug", "status", "mode", "timezone", "starts_at", "ends_at", "capacity", "confirmed_count",
                  "registration_opens_at", "registration_closes_at", "reminder_lead_minutes", "day_before_reminder",
                  "sequence")
_CONTEXT_EVENT = [Event.__table__.c[name] for name in _EVENT_COLUMNS]
_CONTEXT_BY_SLUG = Prepared(select(*_CONTEXT_EVENT, *_CONTEXT)
                            .where(Event.slug == bindparam("slug"), Event.status != "draft"))
_CONTEXT_BY_ID = Prepared(select(*_CONTEXT_EVENT, *_CONTEXT).where(Event.id == bindparam("event_id")))
_EVENT_BY_ID = select(*_CONTEXT_EVENT).where(Event.id == bindparam("event_id"))
_INSERT_REGISTRATION = Prepared(insert(Registration.__table__).returning(Registration.__table__.c.id))
_MARK_WAITLISTED = Prepared(update(Registration.__table__).where(Registration.__table__.c.id == bindparam("registration_id"))
                    .values(status="waitlisted", waitlisted_at=bindparam("waitlisted_at")))
_SEAT_UPDATE = (
    update(Event)
    .where(Event.id == bindparam("seat_event_id"))
    .where((Event.capacity.is_(None)) | (Event.confirmed_count < Event.capacity))
    .values(confirmed_count=Event.confirmed_count + 1)
)
_TAKE_SEAT = Prepared(_SEAT_UPDATE)
_TAKE_SEAT_UNLESS_WAITING = Prepared(_SEAT_UPDATE.where(~select(Registration.id).where(
    Registration.event_id == bindparam("seat_event_id"), Registration.status == "waitlisted").exists()))


def _take_seat(event: Event, *, newcomer: bool = False, connection=None) -> bool:
    """Take one seat with a single conditional write; False when the event is full.

    A `newcomer` never jumps the queue: while anyone is on the waiting list,
    free seats are theirs, so the write takes nothing.
    """
    statement = _TAKE_SEAT_UNLESS_WAITING if newcomer else _TAKE_SEAT
    # On the driver (prepared.py): nothing in the session needs synchronising (the counter is
    # only ever read fresh), and the ORM's bulk-update path costs more than the write.
    return statement.rowcount(connection or db.session.connection(), {"seat_event_id": event.id}) == 1


def _release_seat(event: Event) -> None:
    db.session.execute(
        update(Event).where(Event.id == event.id, Event.confirmed_count > 0)
        .values(confirmed_count=Event.confirmed_count - 1)
        .execution_options(synchronize_session=False)
    )


def _lock_event(event: Event) -> None:
    """Serialise seat moves on one event (PostgreSQL row lock; SQLite's write lock already does)."""
    db.session.execute(select(Event.id).where(Event.id == event.id).with_for_update())


def cancel_registration(registration: Registration, *, now: datetime | None = None,
                        notify: bool = True) -> Registration | None:
    """Cancel a registration, free its seat and promote the first on the waiting list.

    Returns the promoted registration, if any. One transaction.
    """
    now = now or utcnow()
    return unit_of_work(lambda: cancel_registration_in_transaction(registration, now=now, notify=notify))


def cancel_registration_in_transaction(registration, *, now, notify=True):
    event = registration.event
    _lock_event(event)
    db.session.refresh(registration)
    if registration.is_cancelled:
        return None
    was_confirmed = registration.is_confirmed
    registration.status, registration.cancelled_at = "cancelled", now
    if notify:
        notifications.notify_registration_cancelled(registration, now=now)
    notifications.withdraw_pending(registration)
    webhooks.emit("registration.cancelled", event=event, data=webhooks.registration_data(registration),
                  subject=f"{registration.id}:{now:%Y%m%dT%H%M%S%f}", now=now)
    if not was_confirmed:
        return None
    _release_seat(event)
    return promote_next(event, now=now)


def promote_next(event: Event, *, now: datetime) -> Registration | None:
    """Give a free seat to the first person on the waiting list (caller holds the event lock)."""
    first = db.session.scalar(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status == "waitlisted")
        .order_by(Registration.waitlisted_at, Registration.id)
        .limit(1)
    )
    if first is None or event.is_cancelled or not _take_seat(event):
        return None
    _confirm_promoted(first, now)
    return first


def promote_registration(registration: Registration, *, now: datetime | None = None) -> Registration:
    """The organiser moves someone up from the waiting list, if a seat is free."""
    now = now or utcnow()

    def work():
        _lock_event(registration.event)
        db.session.refresh(registration)
        if not registration.is_waitlisted:
            raise ServiceError(_l("Deze persoon staat niet op de wachtlijst."))
        if not _take_seat(registration.event):
            raise ServiceError(_l("Er is geen plaats vrij. Verhoog eerst de capaciteit."))
        _confirm_promoted(registration, now)
        return registration

    return unit_of_work(work)


def _confirm_promoted(registration: Registration, now: datetime) -> None:
    """A waiting-list registration that has just taken a seat."""
    registration.status, registration.waitlisted_at = "confirmed", None
    db.session.flush()
    notifications.notify_promoted(registration, now=now)


def get_by_token(token: str) -> Registration | None:
    if not token or len(token) > 64:
        return None
    return db.session.scalar(select(Registration).where(Registration.token == token))


def join_opens_at(event: Event) -> datetime:
    """When the personal join link starts to work: JOIN_WINDOW_MINUTES before the start."""
    return event.starts_at - timedelta(minutes=current_app.config["JOIN_WINDOW_MINUTES"])


def join_state(registration: Registration, *, now: datetime, opens_at: datetime) -> str:
    """open, not_yet, ended, cancelled, waitlisted or offline (no join link for this event)."""
    event = registration.event
    if not event.is_online or not event.join_url:
        return "offline"
    if event.is_cancelled or registration.is_cancelled:
        return "cancelled"
    if registration.is_waitlisted:
        return "waitlisted"
    if event.has_ended(now):
        return "ended"
    return "open" if now >= opens_at else "not_yet"


def record_join(registration: Registration, *, now: datetime) -> None:
    """Remember the first use of the join link (attendance)."""
    if registration.first_joined_at is None:
        unit_of_work(lambda: db.session.execute(
            update(Registration).where(Registration.id == registration.id,
                                       Registration.first_joined_at.is_(None))
            .values(first_joined_at=now)))


def record_reschedule_response(registration: Registration, *, attending: bool, now: datetime | None = None) -> None:
    def work():
        registration.reschedule_response = "attending" if attending else "declined"
        registration.reschedule_response_at = now or utcnow()

    unit_of_work(work)


def active_registrations_of(registration: Registration) -> list[Registration]:
    """Every active registration with the same address, for the private feed."""
    return db.session.scalars(
        select(Registration).join(Event)
        .where(Registration.email_normalized == registration.email_normalized,
               Registration.status == "confirmed", Event.status != "draft")
        .order_by(Event.starts_at)).all()
