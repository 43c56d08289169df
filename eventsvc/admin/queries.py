"""Read-only figures for the organiser pages."""
from sqlalchemy import func, select

from ..events.models import Event
from ..extensions import db
from ..outbox.models import Message
from ..registrations.models import Registration
from ..search import any_contains


def events_with_counts():
    """Every event with its registrations and delivery state counted, soonest first."""
    reg = select(Registration.event_id, Registration.status, func.count().label("n")) \
        .group_by(Registration.event_id, Registration.status)
    joined = select(Registration.event_id, func.count().label("n")) \
        .where(Registration.first_joined_at.is_not(None)).group_by(Registration.event_id)
    msg = select(Message.event_id, Message.status, func.count().label("n")) \
        .group_by(Message.event_id, Message.status)
    counts = {}
    for event_id, status, n in db.session.execute(reg):
        counts.setdefault(event_id, {})[status] = n
    for event_id, n in db.session.execute(joined):
        counts.setdefault(event_id, {})["joined"] = n
    for event_id, status, n in db.session.execute(msg):
        counts.setdefault(event_id, {})[f"mail_{status}"] = n
    events = db.session.scalars(select(Event).order_by(Event.starts_at.desc(), Event.id.desc())).all()
    return [(event, counts.get(event.id, {})) for event in events]


def registrations_of(event, *, query: str = "", status: str = ""):
    statement = select(Registration).where(Registration.event_id == event.id)
    if status in ("confirmed", "waitlisted", "cancelled"):
        statement = statement.where(Registration.status == status)
    if query:
        statement = statement.where(any_contains(query.lower(), func.lower(Registration.name),
                                                 Registration.email_normalized,
                                                 func.lower(Registration.organisation)))
    return db.session.scalars(statement.order_by(Registration.registered_at, Registration.id).limit(2000)).all()


def active_registrant_count(event) -> int:
    return db.session.scalar(select(func.count()).select_from(Registration).where(
        Registration.event_id == event.id, Registration.status.in_(("confirmed", "waitlisted"))))


def delivery_of(event, *, limit: int = 500):
    """Counts per kind and status, and the latest notices with their state."""
    counts = db.session.execute(
        select(Message.kind, Message.status, func.count()).where(Message.event_id == event.id)
        .group_by(Message.kind, Message.status).order_by(Message.kind)).all()
    latest = db.session.scalars(select(Message).where(Message.event_id == event.id)
                                .order_by(Message.id.desc()).limit(limit)).all()
    return counts, latest


def webhooks_with_counts():
    """Active webhooks with their notices counted by delivery state."""
    from ..webhooks.models import Webhook

    hooks = db.session.scalars(select(Webhook).where(Webhook.is_active.is_(True)).order_by(Webhook.id)).all()
    counts = {hook.id: {} for hook in hooks}
    rows = db.session.execute(select(Message.payload, Message.status).where(Message.kind == "webhook"))
    for payload, status in rows:
        if payload.get("webhook_id") in counts:
            bucket = counts[payload["webhook_id"]]
            bucket[status] = bucket.get(status, 0) + 1
    return [(hook, counts[hook.id]) for hook in hooks]
