"""Read the mail the development SMTP sink stored (only registered in development)."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template
from icalendar import Calendar

from .sink import parse

devmail_bp = Blueprint("devmail", __name__, url_prefix="/dev/mail")

HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Reply-To")
CALENDAR_TYPES = ("text/calendar", "application/ics")
LIST_LIMIT = 200


def _directory() -> Path:
    return Path(current_app.config.get("DEVMAIL_DIR") or os.path.join(current_app.instance_path, "devmail"))


def _names() -> list[str]:
    """Stored mails, newest first (names start with the UTC receive time)."""
    try:
        return sorted((n for n in os.listdir(_directory()) if n.endswith(".eml") and not n.startswith(".")),
                      reverse=True)
    except FileNotFoundError:
        return []


def _path(name: str) -> Path:
    # Only names that are actually listed: no traversal, no hidden or temp files.
    if name not in _names():
        abort(404)
    return _directory() / name


def _received_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def _calendar_parts(msg):
    return [p for p in msg.walk() if p.get_content_type() in CALENDAR_TYPES]


def _text(part) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset and the like: show what is there
        content = part.get_payload(decode=True) or b""
    return content.decode("utf-8", "replace") if isinstance(content, bytes) else content


def _method(part) -> str:
    try:
        return str(Calendar.from_ical(_text(part)).get("METHOD", "")) or part.get_param("method", "?")
    except Exception:
        return part.get_param("method", "?")


def _mime_tree(part) -> dict:
    return {
        "type": part.get_content_type(),
        "params": {k: v for k, v in (part.get_params(header="content-type") or [])[1:] if k not in ("charset", "boundary")},
        "charset": part.get_content_charset(),
        "cte": part.get("Content-Transfer-Encoding"),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
        "children": [_mime_tree(p) for p in part.iter_parts()] if part.is_multipart() else [],
    }


def _written(raw: str) -> list[dict[str, list[str]]]:
    """Per VEVENT, its own content lines exactly as written (unfolded), by property name."""
    events, stack = [], []
    for line in re.sub(r"\r?\n[ \t]", "", raw).splitlines():
        name = re.match(r"[A-Za-z0-9-]*", line).group().upper()
        if name == "BEGIN":
            stack.append(line[6:].strip().upper())
            if stack[-1] == "VEVENT":
                events.append({})
        elif name == "END":
            stack = stack[:-1]
        elif stack and stack[-1] == "VEVENT":
            events[-1].setdefault(name, []).append(line)
    return events


def _when(event, key, written):
    """The time as written, and in UTC (None for floating times and all-day dates)."""
    prop = event.get(key)
    if prop is None:
        return None
    value = prop.dt
    aware = isinstance(value, datetime) and value.tzinfo is not None
    return {"written": " ".join(written.get(key, [])), "all_day": not isinstance(value, datetime),
            "utc": value.astimezone(timezone.utc) if aware else None}


def _calendar(part) -> dict:
    raw = _text(part)
    info = {"type": part.get_content_type(), "filename": part.get_filename(), "raw": raw,
            "method": None, "timezones": [], "events": [], "error": None}
    try:
        cal = Calendar.from_ical(raw)
    except Exception as exc:  # show a broken calendar instead of failing the page
        info["error"] = str(exc)
        return info
    info["method"] = str(cal.get("METHOD", "")) or None
    info["timezones"] = [str(tz.get("TZID")) for tz in cal.walk("VTIMEZONE")]
    for event, written in zip(cal.walk("VEVENT"), _written(raw)):
        info["events"].append({
            **{key.lower(): (str(event[key]) if key in event else None)
               for key in ("UID", "SEQUENCE", "STATUS", "SUMMARY", "LOCATION")},
            "dtstart": _when(event, "DTSTART", written),
            "dtend": _when(event, "DTEND", written),
            "organizer": written.get("ORGANIZER", []),
            "attendees": written.get("ATTENDEE", []),
        })
    return info


@devmail_bp.get("/")
def index():
    names, mails = _names(), []
    for name in names[:LIST_LIMIT]:
        path = _directory() / name
        msg = parse(path.read_bytes())
        mails.append({
            "name": name,
            "received_at": _received_at(path),
            "from": msg["From"], "to": msg["To"], "subject": msg["Subject"],
            "method": next((_method(p) for p in _calendar_parts(msg)), None),
        })
    return render_template("devmail/index.html", mails=mails, total=len(names), directory=_directory())


@devmail_bp.get("/<name>")
def show(name):
    path = _path(name)
    msg = parse(path.read_bytes())
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    return render_template(
        "devmail/show.html", name=name, received_at=_received_at(path), subject=msg["Subject"],
        headers=[(h, msg[h]) for h in HEADERS],
        tree=[_mime_tree(msg)],
        text=_text(text) if text else None,
        html=_text(html) if html else None,
        calendars=[_calendar(p) for p in _calendar_parts(msg)],
    )


@devmail_bp.get("/<name>/raw")
def raw(name):
    response = Response(_path(name).read_bytes(), mimetype="text/plain")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
