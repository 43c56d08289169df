import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, case, cast
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..types import UTCDateTime, utcnow

KINDS = ("confirmation", "waitlisted", "already_registered", "promoted", "rescheduled",
         "cancelled", "registration_cancelled", "reminder", "day_before", "custom", "webhook")
STATUSES = ("pending", "sent", "failed", "superseded")


def new_message_id() -> str:
    """A new row's message_id (the ORM's default, and the rows queued as plain INSERTs)."""
    return uuid.uuid4().hex


class Message(db.Model):
    """One notice in the outbox. Its content is rendered when it is sent."""

    __tablename__ = "messages"
    __table_args__ = (
        # The worker's claim query: due pending rows, oldest first.
        Index("ix_messages_due", "status", "send_after"),
        Index("ix_messages_event", "event_id", "kind", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    registration_id: Mapped[int | None] = mapped_column(
        ForeignKey("registrations.id", ondelete="CASCADE"), index=True
    )
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(200), default=new_message_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    registration = relationship("Registration")
    event = relationship("Event")


_SUPERSEDED = ":superseded:"  # also in migrations/versions/0005_superseded_keys.py


def superseded_key():
    """The dedupe key a notice gets when it is superseded without being sent (SQL, per row).

    The key is there so that one state is never announced twice. A superseded notice never
    announced its state, so it gives the key up: when that state comes back (a cancelled
    registration revived, a session moved back to its first time), its notice is queued anew
    instead of being skipped as a duplicate. A key given up already stays as it is."""
    return case((Message.dedupe_key.contains(_SUPERSEDED), Message.dedupe_key),
                else_=Message.dedupe_key + _SUPERSEDED + cast(Message.id, String))
