"""Helpers for asserting on what the SMTP server received."""
import re
import uuid
from datetime import timezone

import icalendar
import vobject

from eventsvc.extensions import db
from eventsvc.outbox.worker import Worker


def deliver(**kwargs):
    """Run one worker pass, as `flask worker --once` does."""
    totals = Worker(**kwargs).run_once()
    db.session.rollback()  # end the read snapshot so the test sees the worker's writes
    return totals


def calendar_parts(message):
    return [p for p in message.walk() if p.get_content_type() in ("text/calendar", "application/ics")]


def parse_invite(message):
    """The inline text/calendar part, parsed with icalendar and with vobject."""
    part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
    data = part.get_payload(decode=True)
    return part, icalendar.Calendar.from_ical(data), read_with_vobject(data)


def read_with_vobject(data: bytes, rename_tzids=True):
    """Parse with vobject, optionally giving every TZID a name nobody knows.

    vobject keeps a process-wide TZID -> tzinfo registry: the first VTIMEZONE
    (or pytz zone) it sees for a TZID wins for the rest of the process. A fresh
    unknown name forces it to use *this* file's VTIMEZONE, so the test proves
    the embedded definition is right rather than vobject's memory or pytz.
    """
    text = data.decode("utf-8")
    if rename_tzids:
        suffix = uuid.uuid4().hex
        text = re.sub(r"(TZID[=:])([A-Za-z_]+/[A-Za-z_/]+)", rf"\1Test-{suffix}/\2", text)
    return vobject.readOne(text)


def vevent(calendar):
    return next(c for c in calendar.walk("VEVENT"))


def utc(value):
    return value.astimezone(timezone.utc)


def mime_tree(part, depth=0):
    lines = ["  " * depth + part.get_content_type()]
    if part.is_multipart():
        for child in part.iter_parts():
            lines.extend(mime_tree(child, depth + 1))
    return lines


def to_address(received):
    return received.rcpt_tos[0]


def by_recipient(sink):
    result = {}
    for received in sink.messages:
        result.setdefault(to_address(received), []).append(received.message)
    return result
