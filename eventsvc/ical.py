"""RFC 5545 calendar objects for invites, personal .ics files and the public feed.

Pure module: no Flask, no database. Everything returns the bytes that
``icalendar`` produces (CRLF line endings, lines folded at 75 octets).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vCalAddress

DEFAULT_PRODID = "-//eventsvc//eventsvc//NL"
METHODS = ("REQUEST", "CANCEL")


@dataclass(frozen=True)
class CalendarEvent:
    uid: str  # random UUID string, stable for the event's life
    sequence: int
    summary: str
    description: str  # plain text, may contain newlines
    location: str  # may be ""
    url: str | None
    starts_at: datetime  # timezone-aware, UTC
    ends_at: datetime  # timezone-aware, UTC
    tzid: str  # IANA zone, e.g. "Europe/Amsterdam"
    cancelled: bool = False


@dataclass(frozen=True)
class Person:
    name: str
    email: str


# --- public API -------------------------------------------------------------


def build_invite(event: CalendarEvent, *, method: str, organizer: Person, attendee: Person,
                 dtstamp: datetime, prodid: str = DEFAULT_PRODID) -> bytes:
    """METHOD:REQUEST (invite / update) or METHOD:CANCEL (STATUS:CANCELLED)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if _line(organizer.email).lower() == _line(attendee.email).lower():
        raise ValueError("the organizer must never be the recipient of an invite")
    vevent = _vevent(event, dtstamp, cancelled=event.cancelled or method == "CANCEL")
    vevent.add("organizer", _address(organizer))
    vevent.add("attendee", _address(attendee, ROLE="REQ-PARTICIPANT",
                                    PARTSTAT="NEEDS-ACTION", RSVP="TRUE"))
    return _serialise(_calendar(method, prodid), [event], [vevent])


def build_personal_calendar(event: CalendarEvent, *, dtstamp: datetime,
                            prodid: str = DEFAULT_PRODID) -> bytes:
    """The registrant's downloadable .ics: METHOD:PUBLISH, same UID and SEQUENCE
    as the mails, no ORGANIZER/ATTENDEE."""
    vevent = _vevent(event, dtstamp, cancelled=event.cancelled)
    return _serialise(_calendar("PUBLISH", prodid), [event], [vevent])


def build_feed(events: list[CalendarEvent], *, name: str, dtstamp: datetime,
               prodid: str = DEFAULT_PRODID) -> bytes:
    """Public feed: METHOD:PUBLISH, X-WR-CALNAME, one VEVENT per event, no
    ORGANIZER/ATTENDEE, a VTIMEZONE for every distinct tzid used."""
    vevents = [_vevent(e, dtstamp, cancelled=e.cancelled) for e in events]
    cal = _calendar("PUBLISH", prodid)
    cal.calendar_name = _line(name)  # writes RFC 7986 NAME and X-WR-CALNAME
    return _serialise(cal, events, vevents)


def google_calendar_url(event: CalendarEvent, details: str) -> str:
    """"Add to Google Calendar" link (times in UTC, shown in the event's zone)."""
    params = {
        "action": "TEMPLATE",
        "text": _line(event.summary),
        "dates": f"{_utc(event.starts_at):%Y%m%dT%H%M%SZ}/{_utc(event.ends_at):%Y%m%dT%H%M%SZ}",
        "details": details,
        "location": _line(event.location),
        "ctz": event.tzid,
    }
    return "https://calendar.google.com/calendar/render?" + urlencode(_nonempty(params))


def outlook_calendar_url(event: CalendarEvent, details: str) -> str:
    """"Add to Outlook.com calendar" link (ISO 8601 times in UTC)."""
    params = {
        "rru": "addevent",
        "subject": _line(event.summary),
        "startdt": f"{_utc(event.starts_at):%Y-%m-%dT%H:%M:%SZ}",
        "enddt": f"{_utc(event.ends_at):%Y-%m-%dT%H:%M:%SZ}",
        "body": details,
        "location": _line(event.location),
    }
    return "https://outlook.live.com/calendar/0/action/compose?" + urlencode(_nonempty(params))


# --- building blocks --------------------------------------------------------


def _calendar(method: str, prodid: str) -> Calendar:
    cal = Calendar()
    cal.add("version", "2.0")
    cal.add("prodid", _line(prodid))
    cal.add("calscale", "GREGORIAN")
    cal.add("method", method)
    return cal


def _serialise(cal: Calendar, events: list[CalendarEvent], vevents: list[Event]) -> bytes:
    """The calendar's properties, then VTIMEZONEs (RFC 5545: a zone is defined
    before it is used), then the VEVENTs.

    The VTIMEZONEs are serialised once per zone and spliced in on a line
    boundary: folding their many lines again for every invite of a fan-out
    cost more than the rest of the invite.
    """
    head = cal.to_ical()
    end = b"END:VCALENDAR\r\n"
    assert head.endswith(end)
    zones = b"".join(_vtimezone_bytes(tzid, first, last) for tzid, first, last in _zone_spans(events))
    return head[:-len(end)] + zones + b"".join(v.to_ical() for v in vevents) + end


def _vevent(event: CalendarEvent, dtstamp: datetime, *, cancelled: bool) -> Event:
    zone = ZoneInfo(event.tzid)  # raises for an unknown zone
    vevent = Event()
    vevent.add("uid", _line(event.uid))
    vevent.add("sequence", event.sequence)
    vevent.add("dtstamp", _utc(dtstamp))  # written with Z
    # An aware ZoneInfo datetime is written as DTSTART;TZID=<zone key>:<local time>.
    vevent.add("dtstart", _utc(event.starts_at).astimezone(zone))
    vevent.add("dtend", _utc(event.ends_at).astimezone(zone))
    vevent.add("summary", _line(event.summary))
    vevent.add("description", _text(event.description))
    if _line(event.location):
        vevent.add("location", _line(event.location))
    if event.url:
        vevent.add("url", _line(event.url))
    vevent.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    vevent.add("transp", "OPAQUE")
    return vevent


def _zone_spans(events: list[CalendarEvent]) -> list[tuple[str, int, int]]:
    """(tzid, first year, last year) per zone, in a stable order.

    icalendar's default window is 1970-2038 (about 2.5 kB of RDATEs per zone,
    and nothing after 2038), so we ask for whole years around the events only.
    Sorted by tzid because Calendar.add_missing_timezones() iterates a set,
    which would make the output differ from one process to the next.
    """
    spans = []
    for tzid in sorted({e.tzid for e in events}):
        zone = ZoneInfo(tzid)
        local = [_utc(t).astimezone(zone) for e in events if e.tzid == tzid
                 for t in (e.starts_at, e.ends_at)]
        spans.append((tzid, min(local).year, max(local).year))
    return spans


@lru_cache(maxsize=256)
def _vtimezone(tzid: str, first_year: int, last_year: int) -> Timezone:
    # Generating a zone walks tzdata and costs milliseconds; every invite of an
    # event needs the same one. Components are never changed after this.
    return _one_rdate_per_line(Timezone.from_tzid(
        tzid, first_date=date(first_year, 1, 1), last_date=date(last_year + 1, 1, 1)))


@lru_cache(maxsize=256)
def _vtimezone_bytes(tzid: str, first_year: int, last_year: int) -> bytes:
    return _vtimezone(tzid, first_year, last_year).to_ical()


def _one_rdate_per_line(vtimezone: Timezone) -> Timezone:
    """Split icalendar's comma-separated RDATE lists into one RDATE per line.

    Both forms mean the same (RFC 5545), but vobject 0.9.9 reads only the first
    value of a list, so it silently misses every later DST change.
    """
    for observance in vtimezone.subcomponents:
        rdates = observance.pop("RDATE", None)
        for value in rdates.dts if rdates else ():
            observance.add("RDATE", value.dt)
    return vtimezone


def _address(person: Person, **params: str) -> vCalAddress:
    address = vCalAddress("mailto:" + _line(person.email))
    # icalendar would encode a double quote as RFC 6868 ^' which Outlook and
    # Google show literally; a single quote reads the same to a human.
    address.params["CN"] = _line(person.name).replace('"', "'")
    address.params.update(params)
    return address


# --- text hygiene -----------------------------------------------------------

# Control characters plus the Unicode line/paragraph separators, which some
# clients also treat as line breaks.
_BREAKS = {"Cc", "Zl", "Zp"}


def _line(value: str) -> str:
    """A single-line value: every control character becomes one space."""
    cleaned = "".join(" " if unicodedata.category(c) in _BREAKS else c for c in value)
    return re.sub(r" {2,}", " ", cleaned).strip()


def _text(value: str) -> str:
    """Multi-line text: newlines (any convention) kept as LF, icalendar escapes
    them as \\n; other control characters except TAB are dropped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in value
                   if c in "\n\t" or unicodedata.category(c) not in _BREAKS)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: times must be timezone-aware")
    return value.astimezone(timezone.utc)


def _nonempty(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if v}
