"""Rendered public pages, kept per process and checked against the data on every request.

A public page is the same for every anonymous visitor who asks for the same
URL in the same language, except for the CSRF token in its forms and the few
values the caller names as holes (the number of seats left, which changes
with every registration). So the page is rendered once with markers in those
places, and every visitor gets the stored page with their token and the
current values put in. The caller passes a `version` read from the database
(the event's row, or the rows of the list), and a page rendered from other
data is not used.

That read is the largest part of what a cached page costs, so a process may
reuse it for PAGE_CACHE_RECHECK_SECONDS (`recent_read`): a popular page under a
burst of visitors reads its row once a second, not for every visitor, and an
anonymous visitor sees a change at most that long after it was committed.
Registering itself always reads the row (and takes the seat) in its own
transaction, and an organiser (logged in) is always shown the current data.

Only anonymous GETs with no flashed message waiting are served from here;
anything personal (a logged-in organiser, a form with errors, a flash) is
rendered as before.
"""
from collections import OrderedDict
from collections.abc import Callable, Hashable
from threading import Lock
from time import monotonic
from typing import TypeVar

from flask import current_app, request, session
from flask_babel import get_locale
from flask_login import current_user
from flask_login.config import COOKIE_NAME as REMEMBER_COOKIE
from markupsafe import Markup, escape

from .sessions import csrf_token

EXTENSION_KEY = "eventsvc.page_cache"
T = TypeVar("T")


def _hole(name: str) -> Markup:
    # NUL is not valid anywhere in HTML, so a marker can never occur in a rendered page by chance.
    return Markup(f"\x00{name}\x00")


_TOKEN_HOLE = _hole("csrf_token")


class PageCache:
    """A small LRU of rendered pages; safe for gunicorn's threaded workers."""

    def __init__(self, size: int):
        self.size = size
        self._pages: OrderedDict[Hashable, str] = OrderedDict()
        self._reads: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()  # key → (until, value)
        self._lock = Lock()
        self.hits = 0  # pages served from the cache (the tests read it)

    def get(self, key: Hashable) -> str | None:
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            self._pages.move_to_end(key)
            self.hits += 1
            return page

    def put(self, key: Hashable, page: str) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)

    def recently_read(self, key: Hashable, read: Callable[[], T], seconds: float) -> T:
        now = monotonic()
        with self._lock:
            kept = self._reads.get(key)
        if kept is not None and now < kept[0]:
            return kept[1]
        value = read()  # outside the lock: other threads go on serving while this one waits
        if value is not None:  # nothing to show (a 404) is read again, so a new event shows at once
            with self._lock:
                self._reads[key] = (now + seconds, value)
                self._reads.move_to_end(key)
                while len(self._reads) > self.size:
                    self._reads.popitem(last=False)
        return value


class _Uncacheable(str):
    pass


def uncacheable(page: str) -> str:
    """Mark what a `render` callback returns as right for this request but not for the
    version it was asked to render (the data changed in between): served, never stored."""
    return _Uncacheable(page)


def init_page_cache(app) -> None:
    app.extensions[EXTENSION_KEY] = PageCache(app.config["PAGE_CACHE_SIZE"])


def page_cache(app=None) -> PageCache:
    """This app's cache; `app` when the caller already holds the app (not the proxy)."""
    return (app or current_app).extensions[EXTENSION_KEY]


def recent_read(key: Hashable, read: Callable[[], T]) -> T:
    """`read()`, or what it returned for `key` in this process less than
    PAGE_CACHE_RECHECK_SECONDS ago: for the data a shared page is checked against.

    Only for a request that may be served a shared page (an anonymous GET without a
    flashed message); anyone else reads the data as it is now. `None` is never kept."""
    app = current_app._get_current_object()  # each use of a context proxy costs a lookup: once
    seconds = app.config["PAGE_CACHE_RECHECK_SECONDS"]
    if seconds <= 0 or not app.config["PAGE_CACHE_SIZE"] or not _shareable_request(request._get_current_object()):
        return read()
    return page_cache(app).recently_read(key, read, seconds)


def cached_page(version: Hashable, render: Callable[[dict], str | bytes], *, forms: bool = True,
                **holes) -> str | bytes:
    """`render(values)`'s HTML for this request, from the cache when nothing it shows has changed.

    `holes` are this request's values for the places the template fills from
    `values` (name → value); the template must show them as they are, as text.
    `version` must change whenever anything else the page shows changes, apart
    from the URL, the language and the CSRF token, which are part of the key here;
    a `render` that finds other data than `version` describes returns uncacheable(page).
    `forms=False` for a page without a POST form (the upcoming list, a calendar feed):
    no CSRF token, so no session cookie either.
    """
    app, this_request = current_app._get_current_object(), request._get_current_object()
    if not app.config["PAGE_CACHE_SIZE"] or not _shareable_request(this_request):
        return render(holes)
    key = (this_request.endpoint, this_request.full_path, str(get_locale()), version)
    token = csrf_token() if forms else None  # the same token render() puts in its forms (kept on `g`)
    cache = page_cache(app)
    page = cache.get(key)
    if page is None:
        page = render({name: _hole(name) for name in holes})
        if not isinstance(page, _Uncacheable):
            cache.put(key, page.replace(token, _TOKEN_HOLE) if token else page)
    # A fresh render has this request's token already, a stored one the marker; both have the holes.
    for name, value in holes.items():
        page = page.replace(_hole(name), escape(value))
    return page.replace(_TOKEN_HOLE, token) if token else page


_SHAREABLE = "eventsvc.shareable_request"


def _shareable_request(this_request) -> bool:
    environ = this_request.environ  # asked twice per page (recent_read, cached_page): answered once
    shareable = environ.get(_SHAREABLE)
    if shareable is None:
        this_session = session._get_current_object()
        shareable = environ[_SHAREABLE] = (this_request.method == "GET" and "_flashes" not in this_session
                                           and not _maybe_logged_in(this_request, this_session))
    return shareable


def _maybe_logged_in(this_request, this_session) -> bool:
    # Flask-Login keeps the organiser's id in the session, or restores it from its
    # remember cookie: without either nobody is logged in, and nothing needs loading.
    if "_user_id" not in this_session and ("HTTP_COOKIE" not in this_request.environ
                                           or _remember_cookie() not in this_request.cookies):
        return False
    return current_user.is_authenticated


def _remember_cookie() -> str:
    return current_app.config.get("REMEMBER_COOKIE_NAME", REMEMBER_COOKIE)
