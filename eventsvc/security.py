"""Security headers, rate limits, the honeypot and the per-address cap.

`init_security(app)` is called by `create_app` *after* the blueprints are
registered: the rate limits are attached to the view functions of the
endpoints named in `RATE_LIMITED_ENDPOINTS`, so an endpoint must exist when
it runs. It is idempotent (a second call returns the same state), and
`apply_rate_limits(app)` may be called again after registering more
blueprints; it limits whatever listed endpoint is not limited yet.

Rate limits (ratelimit.py, one RateLimiter per app, counted with `limits`):
- key: the client's address, `request.remote_addr`. Behind a reverse proxy
  that is the proxy's address, so every visitor would share one budget: set
  `PROXY_FIX_HOPS` to the number of proxies in front of the app (see
  docs/deploy.md) and `init_security` installs Werkzeug's `ProxyFix` for
  `X-Forwarded-For`, `-Proto` and `-Host`. This is the one place ProxyFix is
  applied (wrapping twice would trust twice as many hops). Leave it 0 when
  clients reach the app directly: `X-Forwarded-For` is then ignored, so a
  client cannot choose its own key by sending one.
- storage: `RATELIMIT_STORAGE_URI`, `memory://` by default (per process: with
  N gunicorn processes a client gets N times the budget; see ratelimit_storage.py
  for how old counters are dropped); in production use
  Redis (`redis://host:6379/0`, needs the `redis` package). If the storage is
  unreachable, requests fall back to per-process memory limits and are never
  refused or broken because of it (`RATELIMIT_IN_MEMORY_FALLBACK_ENABLED`,
  `RATELIMIT_SWALLOW_ERRORS`).
- a setting holds one or more fixed windows ("10 per minute; 100 per hour");
  the endpoints that share a setting share its budget (the form and the API
  register against one), and a setting that does not parse stops the app
  from starting.
- only POST is limited (submitting the form or the login), and only after
  CSRF validation passed: a request without a valid token is refused with 400
  before it reaches the view and costs nothing.
- `RATELIMIT_ENABLED = False` switches every limit off (the test suite does,
  except the tests that prove the limits).
- a refusal is a 429: the app's Dutch error page ("Te veel verzoeken"), or a
  problem document under /api/, with a `Retry-After` header (when
  `RATELIMIT_HEADERS_ENABLED`).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, wraps

from flask import Flask, current_app, request
from flask_babel import lazy_gettext as _l
from werkzeug.middleware.proxy_fix import ProxyFix

from .ratelimit import RateLimiter, check_limit_setting

EXTENSION_KEY = "eventsvc_security"

# endpoint → the config key holding its limit ("10 per minute; 100 per hour").
RATE_LIMITED_ENDPOINTS = {
    "events.register": "REGISTRATION_RATE_LIMIT",  # POST /e/<slug>: the public registration form
    "auth.login": "LOGIN_RATE_LIMIT",  # POST of the organiser login
    "api_public.create_registration": "REGISTRATION_RATE_LIMIT",  # POST /api/v1/events/<slug>/registrations
}

DEFAULTS = {
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_STORAGE_OPTIONS": {},  # passed to limits' storage (e.g. socket_timeout for Redis)
    "RATELIMIT_KEY_PREFIX": "eventsvc",
    "RATELIMIT_HEADERS_ENABLED": True,  # X-RateLimit-* and Retry-After on limited endpoints
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "RATELIMIT_SWALLOW_ERRORS": True,
    "REGISTRATION_RATE_LIMIT": "10 per minute; 100 per hour",
    "LOGIN_RATE_LIMIT": "5 per minute; 30 per hour",
    "REGISTRATIONS_PER_ADDRESS_PER_HOUR": 10,
    "STRICT_TRANSPORT_SECURITY": "max-age=31536000",
    "PROXY_FIX_HOPS": 0,
}

CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "frame-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "object-src": "'none'",
}
# The development mailbox (/dev/mail, only registered in development) shows
# each mail's HTML in `<iframe sandbox srcdoc>`. A srcdoc document inherits
# the page's policy, and mail HTML is styled with inline `style` attributes,
# so that blueprint alone may use inline styles. Scripts stay forbidden (and
# the sandbox forbids them anyway).
BLUEPRINT_CSP_OVERRIDES = {
    "devmail": {"style-src": "'self' 'unsafe-inline'"},
}
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                      "magnetometer=(), gyroscope=(), accelerometer=()")

ADDRESS_CAP_MESSAGE = _l("Met dit e-mailadres zijn het afgelopen uur al veel aanmeldingen gedaan. "
                         "Probeer het over een uur opnieuw.")
HONEYPOT_FIELD = "website"


@dataclass
class SecurityState:
    limiter: RateLimiter
    limited_endpoints: set[str] = field(default_factory=set)


def init_security(app: Flask) -> SecurityState:
    """Headers on every response and the rate limits; safe to call twice."""
    state = app.extensions.get(EXTENSION_KEY)
    if state is not None:
        apply_rate_limits(app)
        return state
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)

    for setting in set(RATE_LIMITED_ENDPOINTS.values()):
        check_limit_setting(app.config, setting)
    state = SecurityState(limiter=RateLimiter(app))
    app.extensions[EXTENSION_KEY] = state
    app.after_request(_security_headers)
    app.wsgi_app = BoundedChunkedBody(app.wsgi_app, app)
    hops = int(app.config["PROXY_FIX_HOPS"] or 0)
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    apply_rate_limits(app)
    return state


def apply_rate_limits(app: Flask) -> set[str]:
    """Limit POSTs to every endpoint of RATE_LIMITED_ENDPOINTS registered by now.

    Returns the endpoints that are limited. Idempotent: an endpoint is wrapped once.
    """
    state: SecurityState = app.extensions[EXTENSION_KEY]
    for endpoint, config_key in RATE_LIMITED_ENDPOINTS.items():
        view = app.view_functions.get(endpoint)
        if view is None or endpoint in state.limited_endpoints:
            continue
        app.view_functions[endpoint] = _limited(view, state.limiter, endpoint, config_key)
        state.limited_endpoints.add(endpoint)
    return set(state.limited_endpoints)


def _limited(view, limiter: RateLimiter, endpoint: str, setting: str):
    """`view`, counting its POSTs against `config[setting]` (read at request time) before it runs."""
    @wraps(view)
    def limited_view(*args, **kwargs):
        if request.method == "POST":
            limiter.check(endpoint, setting)
        return view(*args, **kwargs)

    return limited_view


@cache
def content_security_policy(blueprint: str | None = None) -> str:
    directives = dict(CONTENT_SECURITY_POLICY)
    directives.update(BLUEPRINT_CSP_OVERRIDES.get(blueprint or "", {}))
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@cache
def _default_security_headers(blueprint: str | None, hsts: str | None) -> tuple[tuple[str, str, str], ...]:
    """(lower-case name, name, value) of every header the responses of `blueprint` get."""
    headers = [
        ("Content-Security-Policy", content_security_policy(blueprint)),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("Permissions-Policy", PERMISSIONS_POLICY),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    if hsts:
        headers.append(("Strict-Transport-Security", hsts))
    if blueprint is not None:
        # The app's own pages take their language from Accept-Language when the visitor chose
        # none (select_locale); a page without a form sets no cookie, so `Vary: Cookie` alone
        # would not keep a cache in front from serving one visitor's language to another.
        # (Flask adds Cookie to it when the session was used. Not for /static and /metrics.)
        headers.append(("Vary", "Accept-Language"))
    return tuple((name.lower(), name, value) for name, value in headers)


def _security_headers(response):
    # Only where missing: a view or blueprint that sets its own (stricter) value keeps
    # it, e.g. `Referrer-Policy: no-referrer` on the personal pages under /r/.
    config = current_app.config
    hsts = config["STRICT_TRANSPORT_SECURITY"] if config.get("EVENTSVC_ENV") == "production" else None
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    for key, name, value in _default_security_headers(request.blueprint, hsts):
        if key not in present:
            headers.add(name, value)
    return response


class BoundedChunkedBody:
    """Refuse chunked request bodies over MAX_CONTENT_LENGTH with 413, as
    Werkzeug does for bodies with a Content-Length.

    Werkzeug (3.1) cannot know a chunked body's size up front; for such a
    body it reads at most MAX_CONTENT_LENGTH bytes and, for a urlencoded form,
    silently parses the truncated data (seen with gunicorn: a 300 KiB chunked
    POST was answered 200 with the last fields cut off). Here the body is read
    once, at most MAX_CONTENT_LENGTH + 1 bytes, and handed on with a
    Content-Length: the real length when it fits, else one byte over the
    limit with an empty body, so Flask answers 413 with the Dutch page before
    anything reads the form.
    """

    def __init__(self, wsgi_app, app: Flask):
        self.wsgi_app, self.app = wsgi_app, app

    def __call__(self, environ, start_response):
        # Only when the server dechunked the body and ends the stream (gunicorn, the
        # Werkzeug server); otherwise Werkzeug already reads nothing without a length.
        if environ.get("wsgi.input_terminated") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            limit = self.app.config.get("MAX_CONTENT_LENGTH")
            if limit is not None:
                body = _read_at_most(environ["wsgi.input"], limit + 1)
                too_large = len(body) > limit
                environ["wsgi.input"] = io.BytesIO(b"" if too_large else body)
                environ["CONTENT_LENGTH"] = str(limit + 1 if too_large else len(body))
                environ.pop("HTTP_TRANSFER_ENCODING", None)
                environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)


def _read_at_most(stream, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def registrations_per_address_allowed(email_normalized: str, now: datetime, *, recent: int | None = None) -> bool:
    """May this address register once more? False once it registered
    REGISTRATIONS_PER_ADDRESS_PER_HOUR times (any event, any status) in the
    hour before `now`. 0 or None switches the cap off.

    Call it inside the registration's unit of work, on the path that creates or
    revives a row (not for a repeat of an active registration, which writes no
    row and already sends at most one notice an hour). It is a soft cap: two
    requests racing for the last place may both pass, which is fine for
    stopping a mailbox from being flooded. `recent` is that count when the caller
    already read it (in the same transaction); else it is read here.
    """
    from .extensions import db

    cap = current_app.config.get("REGISTRATIONS_PER_ADDRESS_PER_HOUR", DEFAULTS["REGISTRATIONS_PER_ADDRESS_PER_HOUR"])
    if not cap:
        return True
    if recent is None:
        recent = db.session.scalar(recent_registrations_of_address(),
                                   {"email": email_normalized, "since": now - timedelta(hours=1)})
    return recent < cap


@cache
def recent_registrations_of_address():
    """How often `:email` registered since `:since` (any event, any status): the count the
    per-address cap compares. Built once, on first use (the models import this module)."""
    from sqlalchemy import bindparam, func, select

    from .registrations.models import Registration

    return select(func.count()).select_from(Registration).where(
        Registration.email_normalized == bindparam("email"), Registration.registered_at > bindparam("since"))


def honeypot_tripped(form) -> bool:
    """True when the hidden field people never see was filled in (a bot)."""
    honeypot = getattr(form, HONEYPOT_FIELD, None)
    return bool(honeypot is not None and (honeypot.data or "").strip())
