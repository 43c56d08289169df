import secrets
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..events.models import Event
from ..extensions import db
from ..types import UTCDateTime, utcnow

STATUSES = ("confirmed", "waitlisted", "cancelled")


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


class Registration(db.Model):
    __tablename__ = "registrations"
    __table_args__ = (
        UniqueConstraint("event_id", "email_normalized"),
        CheckConstraint("status IN ('confirmed', 'waitlisted', 'cancelled')", name="status_known"),
        Index("ix_registrations_waitlist", "event_id", "status", "waitlisted_at", "id"),
        # The per-address cap counts an address's registrations of the last hour.
        Index("ix_registrations_address", "email_normalized", "registered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    email_normalized: Mapped[str] = mapped_column(String(254))
    organisation: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(12))
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    locale: Mapped[str] = mapped_column(String(5), default="nl")
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    waitlisted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The answer to the latest reschedule: None, "attending" or "declined".
    reschedule_response: Mapped[str | None] = mapped_column(String(10))
    reschedule_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[Event] = relationship()

    @property
    def is_confirmed(self) -> bool:
        return self.status == "confirmed"

    @property
    def is_waitlisted(self) -> bool:
        return self.status == "waitlisted"

    @property
    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def is_active(self) -> bool:
        return self.status in ("confirmed", "waitlisted")
