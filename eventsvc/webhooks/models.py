from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..types import UTCDateTime, utcnow

EVENT_TYPES = ("registration.created", "registration.cancelled", "event.rescheduled", "event.cancelled")


class Webhook(db.Model):
    """A URL that receives signed notices of what happens, through the outbox."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    organiser_id: Mapped[int | None] = mapped_column(ForeignKey("organisers.id", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    event_types: Mapped[str] = mapped_column(String(500), default=",".join(EVENT_TYPES))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
