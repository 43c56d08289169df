"""Rate limits on the form posts, counted with `limits` in fixed windows.

`RateLimiter.check(endpoint, setting)` is called by the views that
`security.apply_rate_limits` wraps, after CSRF validation. It counts one hit
on each limit of the setting ("10 per minute; 100 per hour", read from the
config on every call), smallest window first, and stops at the first limit
that is over its amount, refusing with 429: a post refused by a smaller window
is not counted in the larger ones. Each limit has one counter per setting and client
address (`request.remote_addr`, which ProxyFix sets behind a proxy), so the
endpoints that share a setting share its budget: a registration through the
API spends the same budget as one through the form.

Storage (`RATELIMIT_STORAGE_URI`, with `RATELIMIT_STORAGE_OPTIONS` for its
client) is made with the app; a URI that `limits` does not know stops the app
from starting. When it fails (Redis down), the check is
repeated on per-process memory (`RATELIMIT_IN_MEMORY_FALLBACK_ENABLED`), and
the storage is asked again at most every STORAGE_RETRY_SECONDS, by one
request at a time; without the fallback the error is logged and the post
allowed (`RATELIMIT_SWALLOW_ERRORS`) or raised. With the defaults, a
storage that fails never breaks a registration.

Headers (`RATELIMIT_HEADERS_ENABLED`): `X-RateLimit-Limit`, `-Remaining` and
`-Reset` (epoch seconds) of the limit that refused, or else of the smallest
window; `Retry-After` (seconds) on the 429 alone, since on the 303 that follows
a registration it would ask the browser to wait before following it.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from threading import Lock
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import Storage, storage_from_string
from werkzeug.exceptions import TooManyRequests

from . import ratelimit_storage  # noqa: F401  (memory:// without a timer thread per hit)

STORAGE_RETRY_SECONDS = 30.0
REDIS_TIMEOUT_SECONDS = 0.5  # per connect and per answer, unless RATELIMIT_STORAGE_OPTIONS says otherwise
_COUNTED = "eventsvc.rate_limit"  # the request's Counted, in its WSGI environ
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counted:
    """One limit's counter after this request's hit."""

    limit: RateLimitItem
    key: str
    count: int
    storage: Storage

    @property
    def breached(self) -> bool:
        return self.count > self.limit.amount

    @property
    def remaining(self) -> int:
        return max(0, self.limit.amount - self.count)


class RateLimiter:
    def __init__(self, app: Flask):
        self.app = app
        config = app.config
        # A bad URI or a missing client package stops the app here. Redis connects on first use,
        # in the process that serves (redis-py's pool starts afresh after gunicorn forks).
        uri = config["RATELIMIT_STORAGE_URI"]
        try:
            self._storage: Storage = storage_from_string(uri, **storage_options(uri, config))
        except ConfigurationError as error:
            raise ValueError(f"RATELIMIT_STORAGE_URI={uri!r}: {error}") from error
        self._fallback: Storage | None = (storage_from_string("memory://")
                                          if config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] else None)
        self._storage_failed_at: float | None = None  # monotonic time the storage last failed
        self._probing = Lock()
        app.after_request(self._add_headers)

    def check(self, endpoint: str, setting: str) -> None:
        """Count this request against `config[setting]`'s limits; raise TooManyRequests when over."""
        config = current_app.config
        if not config["RATELIMIT_ENABLED"]:
            return
        try:
            limits = _parsed(config[setting])
        except ValueError:  # checked at start-up; a value changed since must not refuse every post
            logger.error("%s=%r is not a rate limit: the post is not limited", setting, config[setting])
            return
        if not limits:
            return
        identifiers = (config["RATELIMIT_KEY_PREFIX"], setting, request.remote_addr or "127.0.0.1")
        storage = self._current_storage()
        try:
            counted = _hit(storage, limits, identifiers)
        except Exception as error:
            storage = self._after_failure(storage, error)
            if storage is None:
                return
            counted = _hit(storage, limits, identifiers)
        request.environ[_COUNTED] = counted
        if counted.breached:
            logger.info("rate limit %s reached on %s", counted.limit, endpoint)
            raise TooManyRequests()

    def _current_storage(self) -> Storage:
        failed_at = self._storage_failed_at  # read once: a probing thread may clear it meanwhile
        if failed_at is None:
            return self._storage
        if time.monotonic() - failed_at >= STORAGE_RETRY_SECONDS and self._probing.acquire(blocking=False):
            try:  # one request at a time asks whether the storage is back
                self._storage_failed_at = time.monotonic()
                if self._storage.check():
                    self._storage_failed_at = None
                    logger.info("rate limit storage reachable again")
                    return self._storage
            except Exception:
                pass
            finally:
                self._probing.release()
        return self._fallback or self._storage

    def _after_failure(self, storage: Storage, error: Exception) -> Storage | None:
        """The storage to count on instead of `storage`, which just failed; None to let the post pass."""
        if storage is self._storage and self._fallback is not None:
            if self._storage_failed_at is None:
                logger.warning("rate limit storage unreachable (%s): counting in process memory",
                               type(error).__name__, exc_info=error)
            self._storage_failed_at = time.monotonic()
            return self._fallback
        if not self.app.config["RATELIMIT_SWALLOW_ERRORS"]:
            raise error
        logger.error("rate limit storage failed (%s): the request is not limited", type(error).__name__,
                     exc_info=error)
        return None

    def _add_headers(self, response):
        counted: Counted | None = request.environ.get(_COUNTED)
        if counted is None or not current_app.config["RATELIMIT_HEADERS_ENABLED"]:
            return response
        try:
            reset_at = counted.storage.get_expiry(counted.key)
        except Exception:
            logger.warning("rate limit storage unreachable while reading a window's end: no rate limit headers",
                           exc_info=True)
            return response
        headers = response.headers
        headers["X-RateLimit-Limit"] = str(counted.limit.amount)
        headers["X-RateLimit-Remaining"] = str(counted.remaining)
        # Rounded up, plus a second: a client that waits exactly this long finds the window over
        # (Redis keeps its TTL in whole seconds, so the window may end later than it says).
        headers["X-RateLimit-Reset"] = str(math.ceil(reset_at) + 1)
        if response.status_code == 429:
            headers["Retry-After"] = str(max(1, math.ceil(reset_at - time.time()) + 1))
        return response


def _hit(storage: Storage, limits: tuple[RateLimitItem, ...], identifiers: tuple[str, ...]) -> Counted:
    """Hit each limit, smallest window first, up to the first one that is over; the one to report."""
    smallest = None
    for limit in limits:
        key = limit.key_for(*identifiers)
        counted = Counted(limit, key, storage.incr(key, limit.get_expiry()), storage)
        if counted.breached:
            return counted
        smallest = smallest or counted
    return smallest


def storage_options(uri: str, config) -> dict:
    """The storage client's options: RATELIMIT_STORAGE_OPTIONS over, for Redis, timeouts.

    redis-py waits for ever by default: a Redis host that stops answering (gone from the
    network, not restarted) would hold every request that counts, and the fallback to
    memory would never begin. With a timeout the hit fails and the post is counted in memory.
    """
    options = dict(config.get("RATELIMIT_STORAGE_OPTIONS") or {})
    if urlsplit(uri).scheme in ("redis", "rediss", "redis+unix"):
        options.setdefault("socket_timeout", REDIS_TIMEOUT_SECONDS)
        options.setdefault("socket_connect_timeout", REDIS_TIMEOUT_SECONDS)
    return options


def check_limit_setting(config, setting: str) -> None:
    """At start-up: raise ValueError, naming the setting, when `config[setting]` is not a rate limit."""
    value = config[setting]
    try:
        _parsed(value)
    except ValueError as error:
        raise ValueError(f"{setting}={value!r} is not a rate limit such as '10 per minute; 100 per hour'") from error


@lru_cache(maxsize=32)
def _parsed(setting: str) -> tuple[RateLimitItem, ...]:
    """The limits of a setting, smallest window first (the setting is validated at start-up)."""
    return tuple(sorted(parse_many(setting), key=RateLimitItem.get_expiry)) if setting else ()
