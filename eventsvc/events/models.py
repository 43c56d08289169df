import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, Boolean
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..types import UTCDateTime, utcnow

MODES = ("online", "onsite", "hybrid")
STATUSES = ("draft", "published", "cancelled")


class EventRules:
    """What follows from an event's columns alone; shared by the mapped `Event` and by
    `EventSnapshot`, the plain copy of its row that the public pages check on every request."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_published(self) -> bool:
        return self.status == "published"

    @property
    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def is_online(self) -> bool:
        return self.mode in ("online", "hybrid")

    @property
    def places_left(self) -> int | None:
        if self.capacity is None:
            return None
        return max(self.capacity - self.confirmed_count, 0)

    @property
    def is_full(self) -> bool:
        return self.places_left == 0

    def has_started(self, now: datetime) -> bool:
        return now >= self.starts_at

    def has_ended(self, now: datetime) -> bool:
        return now >= self.ends_at

    def reminder_lead(self, default_minutes: int) -> timedelta:
        minutes = self.reminder_lead_minutes if self.reminder_lead_minutes is not None else default_minutes
        return timedelta(minutes=minutes)


class Event(EventRules, db.Model):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity_not_negative"),
        CheckConstraint("confirmed_count >= 0", name="confirmed_not_negative"),
        CheckConstraint("mode IN ('online', 'onsite', 'hybrid')", name="mode_known"),
        CheckConstraint("status IN ('draft', 'published', 'cancelled')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str] = mapped_column(String(300), default="")
    region: Mapped[str] = mapped_column(String(100), default="")
    organised_by: Mapped[str] = mapped_column(String(300), default="")
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    mode: Mapped[str] = mapped_column(String(10), default="online")
    location: Mapped[str] = mapped_column(String(300), default="")
    join_url: Mapped[str] = mapped_column(String(2000), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Amsterdam")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    capacity: Mapped[int | None] = mapped_column(Integer)
    # Seats taken; changed only with conditional UPDATEs (see registrations.services).
    confirmed_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    registration_opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registration_closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10), default="draft")
    uid: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: str(uuid.uuid4()))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    reminder_lead_minutes: Mapped[int | None] = mapped_column(Integer)
    day_before_reminder: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    changes: Mapped[list["EventChange"]] = relationship(
        back_populates="event", order_by="EventChange.id", cascade="all, delete-orphan"
    )

    @property
    def latest_change(self) -> "EventChange | None":
        return self.changes[-1] if self.changes else None


class EventSnapshot(EventRules):
    """An event's row as plain values (each column read as an attribute), with the same rules.
    Not mapped: nothing loads it into the session, nothing writes it back. A registration reads
    only the columns its rules need (registrations.services._EVENT_COLUMNS)."""

    def __init__(self, row):
        self.__dict__.update(row)
        self._remembered = {}

    def remember(self, key, work):
        """`work()`, worked out once per snapshot (it may be shared by many requests)."""
        value = self._remembered.get(key)
        if value is None:
            value = self._remembered[key] = work()
        return value


class EventChange(db.Model):
    """One reschedule or cancellation, kept for the public history."""

    __tablename__ = "event_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(12))  # rescheduled / cancelled
    old_starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    old_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    new_starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    new_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("organisers.id", ondelete="SET NULL"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sequence: Mapped[int] = mapped_column(Integer)

    event: Mapped[Event] = relationship(back_populates="changes")
