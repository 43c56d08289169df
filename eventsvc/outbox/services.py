"""Writing to the outbox. Callers own the transaction; nothing here commits."""
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..types import utcnow
from .models import Message


def enqueue(kind: str, *, dedupe_key: str, registration=None, event=None,
            send_after: datetime | None = None, payload: dict | None = None) -> bool:
    """Queue one notice unless one with the same `dedupe_key` exists.

    Returns whether a row was written. `INSERT … ON CONFLICT DO NOTHING` keeps
    this safe when two requests race for the same key.
    """
    event_id = event.id if event is not None else (registration.event_id if registration else None)
    values = dict(
        kind=kind, dedupe_key=dedupe_key, payload=payload or {},
        registration_id=registration.id if registration is not None else None,
        event_id=event_id, send_after=send_after or utcnow(), status="pending",
        attempts=0, message_id=Message.message_id.default.arg(None), created_at=utcnow(),
    )
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Message).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]).execution_options(preserve_rowcount=True)
    return db.session.execute(statement).rowcount == 1


def supersede_pending(*, event_id: int, kinds: tuple[str, ...], registration_id: int | None = None) -> int:
    """Mark unsent notices of these kinds as superseded (a newer state replaces them)."""
    statement = (
        update(Message)
        .where(Message.event_id == event_id, Message.kind.in_(kinds), Message.status == "pending")
        .values(status="superseded", locked_until=None)
    )
    if registration_id is not None:
        statement = statement.where(Message.registration_id == registration_id)
    return db.session.execute(statement).rowcount
