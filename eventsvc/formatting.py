"""Dates, times and text as people read them, in their language."""
from datetime import datetime
from zoneinfo import ZoneInfo

import nh3
from babel.dates import format_date
from markdown_it import MarkdownIt
from markupsafe import Markup

_markdown = MarkdownIt("js-default")  # CommonMark without raw HTML
_ALLOWED_TAGS = {"p", "br", "strong", "em", "a", "ul", "ol", "li", "blockquote", "code", "pre",
                 "h2", "h3", "h4", "hr"}


def render_markdown(text: str) -> Markup:
    """Markdown to HTML, then sanitised: only harmless tags, safe links."""
    html = _markdown.render(text or "")
    clean = nh3.clean(html, tags=_ALLOWED_TAGS, attributes={"a": {"href", "title"}},
                      url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")
    return Markup(clean)


def current_locale() -> str:
    """The reader's language inside a request, else Dutch (CLI, worker)."""
    from flask import has_request_context
    from flask_babel import get_locale

    return str(get_locale() or "nl") if has_request_context() else "nl"


def _time(moment: datetime, locale: str) -> str:
    return moment.strftime("%H.%M") if locale == "nl" else moment.strftime("%H:%M")


def _day(moment: datetime, locale: str) -> str:
    return format_date(moment, "EEEE d MMMM y", locale=locale)


def format_when(starts_at: datetime, ends_at: datetime, tz: str | ZoneInfo, locale: str = "nl") -> str:
    """'woensdag 23 juni 2021, 12.45–14.00 uur' / 'Wednesday 23 June 2021, 12:45–14:00'."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    start, end = starts_at.astimezone(zone), ends_at.astimezone(zone)
    suffix = " uur" if locale == "nl" else ""
    if start.date() == end.date():
        return f"{_day(start, locale)}, {_time(start, locale)}–{_time(end, locale)}{suffix}"
    return (f"{_day(start, locale)}, {_time(start, locale)}{suffix} – "
            f"{_day(end, locale)}, {_time(end, locale)}{suffix}")


def format_moment(moment: datetime, tz: str | ZoneInfo, locale: str = "nl") -> str:
    """'woensdag 23 juni 2021, 12.30 uur'."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    local = moment.astimezone(zone)
    suffix = " uur" if locale == "nl" else ""
    return f"{_day(local, locale)}, {_time(local, locale)}{suffix}"
