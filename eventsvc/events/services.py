"""Reading events for the public pages."""
from datetime import datetime
from functools import cache

from sqlalchemy import bindparam, inspect, select
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..search import LIKE_ESCAPE, containing
from ..types import utcnow
from .models import Event, EventSnapshot


def list_upcoming(*, now: datetime | None = None, audience: str | None = None, region: str | None = None):
    """Published and cancelled events that have not ended, soonest first."""
    statement, params = _upcoming(rows=False, now=now, audience=audience, region=region)
    return db.session.scalars(statement, params).all()


def upcoming_version(*, now: datetime | None = None, audience: str | None = None,
                     region: str | None = None) -> tuple:
    """Every column of every event list_upcoming() would return, as plain rows.

    Cheap to read (no ORM objects) and different whenever anything the list or
    the feed shows is different; a change to an event always bumps its
    sequence, so the history is covered too.
    """
    statement, params = _upcoming(rows=True, now=now, audience=audience, region=region)
    return tuple(tuple(row) for row in read_once(statement, params))


def _upcoming(*, rows: bool, now, audience, region) -> tuple:
    params = {"now": now or utcnow()}
    if audience:
        params["audience"] = containing(audience)
    if region:
        params["region"] = region
    return _upcoming_statement(rows, bool(audience), bool(region)), params


@cache
def _upcoming_statement(rows: bool, audience: bool, region: bool):
    """Built once per variant (see _PUBLIC_EVENT_BY_SLUG): plain rows, or the events with
    their changes, which the list shows (one more query for all, not one per event)."""
    query = select(*Event.__table__.columns) if rows else select(Event).options(selectinload(Event.changes))
    query = query.where(Event.status.in_(("published", "cancelled")), Event.ends_at > bindparam("now"))
    if audience:
        query = query.where(Event.audience.ilike(bindparam("audience"), escape=LIKE_ESCAPE))
    if region:
        query = query.where(Event.region == bindparam("region"))
    return query.order_by(Event.starts_at, Event.id)


# Columns a public event page does not show as they are: the seat count changes with
# every registration, so the page cache fills the number of seats left in per request.
_FILLED_IN_PER_REQUEST = frozenset({"confirmed_count", "updated_at"})
_PAGE_COLUMNS = tuple(column.key for column in inspect(Event).column_attrs
                      if column.key not in _FILLED_IN_PER_REQUEST)


def event_page_version(event: Event | EventSnapshot, locale) -> tuple:
    """What the event's public page is made of, but for the number of seats left:
    every other column, whether it is full, and which plural form the count takes."""
    if isinstance(event, EventSnapshot):  # never changes, and serves many visitors: worked out once
        return event.remember(("page_version", str(locale)), lambda: _event_page_version(event, locale))
    return _event_page_version(event, locale)


def _event_page_version(event, locale) -> tuple:
    columns = tuple(getattr(event, key) for key in _PAGE_COLUMNS)
    places = event.places_left
    return columns, event.is_full, None if places is None else locale.plural_form(places)


# Built once, with its parameter bound per call: on the hot paths (every public page and
# form post) building a statement anew costs more Python time than running it.
_PUBLIC_EVENT_BY_SLUG = select(Event).where(Event.slug == bindparam("slug"), Event.status != "draft")


def possible_slug(slug: str | None) -> bool:
    """Whether an event could have this slug at all (the column holds 120 characters);
    a longer one is answered without asking the database."""
    return bool(slug) and len(slug) <= 120


def get_public_event(slug: str) -> Event | None:
    """An event the public may see: anything but a draft."""
    if not possible_slug(slug):
        return None
    return db.session.scalar(_PUBLIC_EVENT_BY_SLUG, {"slug": slug})


_PUBLIC_EVENT_ROW_BY_SLUG = select(*Event.__table__.columns).where(
    Event.slug == bindparam("slug"), Event.status != "draft")


def get_public_event_snapshot(slug: str) -> EventSnapshot | None:
    """get_public_event() as a plain copy of the row, for a page that may not need the
    mapped event at all (one served from the page cache)."""
    if not possible_slug(slug):
        return None
    rows = read_once(_PUBLIC_EVENT_ROW_BY_SLUG, {"slug": slug})
    return EventSnapshot(rows[0]._mapping) if rows else None


def read_once(statement, params=None):
    """Run one read on a connection of its own, outside the request's ORM session.

    For the per-request checks of the public pages: a session (its transaction, its
    connection, its identity map) costs more than the query, and on a page served from
    the cache nothing else would use it. Returns every row."""
    with db.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            # One statement needs no transaction: no BEGIN and no ROLLBACK round trip. (SQLite's
            # are in-process and cheap, while switching its isolation level costs two PRAGMAs.)
            connection.execution_options(isolation_level="AUTOCOMMIT")
        return connection.execute(statement, params or {}).all()
