"""The language switcher: an explicit choice of Dutch or English, remembered in the session.

`select_locale()` (in `eventsvc/__init__.py`) prefers `session["lang"]` over the
browser's Accept-Language, so the choice made here wins on every later request.
The form posts with the app's CSRF token (CSRFProtect covers every POST view).
"""
from urllib.parse import urlsplit

from flask import Blueprint, abort, has_request_context, redirect, request, session, url_for
from flask_babel import refresh

LANGUAGES = ("nl", "en")

bp = Blueprint("i18n", __name__)


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else "/": never an open redirect.

    Accepted: "/e/slug", "/r/token?x=1". Refused: absolute URLs, scheme-relative
    "//host", anything with a backslash ("/\\host" is "//host" to browsers),
    whitespace or control characters (browsers drop tabs and newlines, so
    "/\\t/host" would become "//host"), and anything not starting with "/".
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    # request.full_path ends in "?" when there is no query string.
    return target[:-1] if target.endswith("?") else target


@bp.before_app_request
def choose_the_locale_per_request():
    """Work out the language afresh for every request.

    Flask-Babel caches the locale on `g`, which lives as long as the app
    context. A request shares an app context that is already active (the test
    suite keeps one open around many requests), so without this the first
    request's language would stick to every later one, whatever its session
    or Accept-Language says."""
    refresh()


@bp.post("/taal")
def switch():
    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        abort(400)
    session["lang"] = lang
    session.permanent = True  # remembered for PERMANENT_SESSION_LIFETIME, not just this browser session
    return redirect(safe_next(request.form.get("next")), 303)


@bp.app_context_processor
def switcher_context():
    """Where base.html's switcher posts to; only inside a request (mails are rendered without one)."""
    if not has_request_context():
        return {}
    return {"language_switch_url": url_for("i18n.switch")}
