"""Security headers, rate limits, the honeypot and the per-address cap.

`init_security(app)` is called by `create_app` *after* the blueprints are
registered: the rate limits are attached to the view functions of the
endpoints named in `RATE_LIMITED_ENDPOINTS`, so an endpoint must exist when
it runs. It is idempotent (a second call returns the same state), and
`apply_rate_limits(app)` may be called again after registering more
blueprints; it limits whatever listed endpoint is not limited yet.

Rate limits (Flask-Limiter, one limiter per app):
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
- only POST is limited (submitting the form or the login), and only after
  CSRF validation passed: a request without a valid token is refused with 400
  before it reaches the view and costs nothing.
- `RATELIMIT_ENABLED = False` switches every limit off (the test suite does,
  except the tests that prove the limits).
- a refusal is a 429 with the app's Dutch error page ("Te veel verzoeken")
  and a `Retry-After` header.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from flask import Flask, current_app, request
from flask_babel import lazy_gettext as _l
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from . import ratelimit_storage  # noqa: F401  (memory:// without a timer thread per hit)

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
    limiter: Limiter
    limited_endpoints: set[str] = field(default_factory=set)


def init_security(app: Flask) -> SecurityState:
    """Headers on every response and the rate limits; safe to call twice."""
    state = app.extensions.get(EXTENSION_KEY)
    if state is not None:
        apply_rate_limits(app)
        return state
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)

    limiter = Limiter(key_func=get_remote_address, key_prefix=app.config["RATELIMIT_KEY_PREFIX"])
    limiter.init_app(app)
    # Every limit here is on a POST, so other requests skip the limiter's lookups entirely
    # (it otherwise resolves limits for every request, a fifth of what a page view costs).
    limiter.request_filter(_not_a_post)
    _check_limits_on_posts_only(app, limiter)
    state = SecurityState(limiter=limiter)
    app.extensions[EXTENSION_KEY] = state
    app.after_request(_security_headers)
    app.wsgi_app = BoundedChunkedBody(app.wsgi_app, app)
    hops = int(app.config["PROXY_FIX_HOPS"] or 0)
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    apply_rate_limits(app)
    return state


def _not_a_post() -> bool:
    return request.method != "POST"


def _check_limits_on_posts_only(app: Flask, limiter: Limiter) -> None:
    """Narrow the limiter's own hooks, which run for every request, to POSTs.

    The limits of RATE_LIMITED_ENDPOINTS are checked by the decorators of their views,
    not by the before_request hook: it only applies default and application-wide limits.
    Without any (RATELIMIT_DEFAULT, RATELIMIT_APPLICATION) it is dropped; with some, it
    runs for POSTs alone, as the request filter above would pass anything else, but only
    after resolving its limits. Its after_request hook (rate limit headers, deductions)
    and teardown hook (resetting the state a limit check left) have nothing to do for a
    request no limit was checked on: they run for POSTs alone too."""
    _on_posts_only(app.after_request_funcs, "__inject_headers", lambda hook: lambda response: (
        hook(response) if request.method == "POST" else response))
    _on_posts_only(app.teardown_request_funcs, "__release_context", lambda hook: lambda error=None: (
        hook(error) if request.method == "POST" else None))
    hooks = app.before_request_funcs.setdefault(None, [])
    check = limiter._check_request_limit
    if check not in hooks:  # a Flask-Limiter that stopped installing the hook: nothing to narrow
        return
    if not app.config.get("RATELIMIT_DEFAULT") and not app.config.get("RATELIMIT_APPLICATION"):
        hooks.remove(check)
        return

    def check_posts():
        if request.method == "POST":
            return check()
        return None

    hooks[hooks.index(check)] = check_posts


def _on_posts_only(registry: dict, name: str, narrow) -> None:
    """Replace the app-wide hook whose function is called `name` by `narrow(hook)`."""
    hooks = registry.setdefault(None, [])
    for i, hook in enumerate(hooks):
        function = getattr(hook, "func", hook)  # the after_request hook is a functools.partial
        if getattr(function, "__name__", None) == name:
            hooks[i] = narrow(hook)
            return


def apply_rate_limits(app: Flask) -> set[str]:
    """Limit POSTs to every endpoint of RATE_LIMITED_ENDPOINTS registered by now.

    Returns the endpoints that are limited. Idempotent: an endpoint is wrapped once.
    """
    state: SecurityState = app.extensions[EXTENSION_KEY]
    for endpoint, config_key in RATE_LIMITED_ENDPOINTS.items():
        view = app.view_functions.get(endpoint)
        if view is None or endpoint in state.limited_endpoints:
            continue
        limit = state.limiter.limit(_config_value(config_key), methods=["POST"])
        app.view_functions[endpoint] = limit(view)
        state.limited_endpoints.add(endpoint)
    return set(state.limited_endpoints)


def _config_value(key):
    # Read at request time, so a changed setting applies without rebuilding the app.
    return lambda: current_app.config[key]


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
    present = {name.lower() for name in headers.keys()}
    headers.extend([(name, value) for key, name, value in _default_security_headers(request.blueprint, hsts)
                    if key not in present])
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
