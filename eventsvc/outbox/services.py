"""Writing to the outbox. Callers own the transaction; nothing here commits."""
import secrets
from datetime import datetime
from functools import cache

from sqlalchemy import String, bindparam, case, cast, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..prepared import Prepared
from ..registrations.models import Registration
from ..types import utcnow
from .models import Message, new_message_id, superseded_key

COLUMNS = ["kind", "event_id", "registration_id", "dedupe_key", "payload", "send_after", "status",
           "attempts", "message_id", "created_at"]


def _insert_skipping_duplicates(select_or_rows, connection=None):
    """INSERT … ON CONFLICT (dedupe_key) DO NOTHING on either backend; returns the rows written.

    `select_or_rows` is a SELECT, or a list of rows. Rows go to the driver's executemany
    with one constant statement, compiled once per database (prepared.py): every
    registration runs it, on SQLite while holding the database's only write lock.
    `connection`: that of a unit of work that runs without the session; else the session's.
    """
    if connection is None:
        session = db.session()
        # What the session still holds is written first, as an ORM execute would (autoflush):
        # the rows refer to registrations, and a SELECT reads them.
        session.flush()
        connection = session.connection()
    dialect = connection.dialect.name
    if isinstance(select_or_rows, list):
        return _insert_rows_skipping_duplicates(dialect).rowcount_many(connection, select_or_rows)
    statement = _skipping_duplicates(_insert(dialect).from_select(COLUMNS, select_or_rows))
    return connection.execute(statement, execution_options={"preserve_rowcount": True}).rowcount


def _insert(dialect: str):
    return (postgresql if dialect == "postgresql" else sqlite).insert(Message.__table__)


def _skipping_duplicates(statement):
    return statement.on_conflict_do_nothing(index_elements=["dedupe_key"])


@cache
def _insert_rows_skipping_duplicates(dialect: str) -> Prepared:
    """Built once per dialect: every registration runs it."""
    return Prepared(_skipping_duplicates(_insert(dialect)))


def notice(kind: str, *, dedupe_key: str, registration=None, event=None,
           send_after: datetime | None = None, payload: dict | None = None) -> dict:
    """The outbox row for one notice, for enqueue_all()."""
    event_id = event.id if event is not None else (registration.event_id if registration else None)
    return dict(
        kind=kind, dedupe_key=dedupe_key, payload=payload or {},
        registration_id=registration.id if registration is not None else None,
        event_id=event_id, send_after=send_after or utcnow(), status="pending",
        attempts=0, message_id=new_message_id(), created_at=utcnow(),
    )


def enqueue_all(notices: list[dict], *, connection=None) -> int:
    """Queue these notices in one statement, each unless one with its `dedupe_key` exists.

    Returns how many rows were written. `INSERT … ON CONFLICT DO NOTHING` keeps
    this safe when two requests race for the same key. In the session's transaction, or on
    `connection`, that of a unit of work that runs without the session.
    """
    return _insert_skipping_duplicates(notices, connection) if notices else 0


def enqueue(kind: str, *, connection=None, **fields) -> bool:
    """Queue one notice (see notice()); returns whether a row was written."""
    return enqueue_all([notice(kind, **fields)], connection=connection) == 1


def enqueue_for_registrants(event, kind: str, payload: dict, now: datetime, *,
                            statuses=("confirmed", "waitlisted"), state: str | None = None,
                            send_after: datetime | None = None) -> int:
    """One notice per registrant of `event` in `statuses`, written by the database in one statement.

    INSERT … SELECT keeps a fan-out to 100,000 registrants a single round trip.
    The dedupe key names the state (by default the event's sequence).
    """
    key = f"{kind}:" + cast(Registration.id, String) + f":{state or event.sequence}"
    rows = select(
        literal(kind), literal(event.id), Registration.id, key,
        literal(payload, Message.payload.type), literal(send_after or now, Message.send_after.type),
        literal("pending"), literal(0), key + f":{secrets.token_hex(6)}", literal(now, Message.created_at.type),
    ).where(Registration.event_id == event.id, Registration.status.in_(statuses))
    return _insert_skipping_duplicates(rows)


def supersede_pending(*, event_id: int, kinds: tuple[str, ...], registration_id: int | None = None) -> int:
    """Mark unsent notices of these kinds as superseded (a newer state replaces them).

    Each gives up its dedupe key (models.superseded_key), except one a worker is sending
    right now (a live lease): that one may still go out, and then its key must keep the
    state from being announced again. A worker that finds it superseded before sending
    gives the key up itself (delivery._prepare)."""
    statement = (
        update(Message)
        .where(Message.event_id == event_id, Message.kind.in_(kinds), Message.status == "pending")
        .values(status="superseded", locked_until=None,
                dedupe_key=case((Message.locked_until > utcnow(), Message.dedupe_key), else_=superseded_key()))
        .execution_options(synchronize_session=False)
    )
    if registration_id is not None:
        statement = statement.where(Message.registration_id == registration_id)
    return db.session.execute(statement).rowcount


def delete_pending(*, registration_id: int, dedupe_keys: list[str], connection=None) -> int:
    """Delete unsent notices of one registration by their dedupe keys (see notifications.retract).
    In the session's transaction, or on `connection` (see enqueue_all)."""
    rows = [{"registration_id": registration_id, "dedupe_key": key} for key in dedupe_keys]
    return _DELETE_PENDING.rowcount_many(connection or db.session.connection(), rows) if rows else 0


_DELETE_PENDING = Prepared(delete(Message.__table__).where(
    Message.__table__.c.registration_id == bindparam("registration_id"), Message.__table__.c.status == "pending",
    Message.__table__.c.dedupe_key == bindparam("dedupe_key")))
