"""Reading events for the public pages."""
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..types import utcnow
from .models import Event


def list_upcoming(*, now: datetime | None = None, audience: str | None = None, region: str | None = None):
    """Published and cancelled events that have not ended, soonest first."""
    now = now or utcnow()
    query = select(Event).where(Event.status.in_(("published", "cancelled")), Event.ends_at > now)
    if audience:
        query = query.where(Event.audience.ilike(f"%{audience}%"))
    if region:
        query = query.where(Event.region == region)
    # The list shows each event's latest change: load them all in one more query, not one per event.
    return db.session.scalars(query.options(selectinload(Event.changes)).order_by(Event.starts_at, Event.id)).all()


def get_public_event(slug: str) -> Event | None:
    """An event the public may see: anything but a draft."""
    if not slug or len(slug) > 120:
        return None
    return db.session.scalar(select(Event).where(Event.slug == slug, Event.status != "draft"))
