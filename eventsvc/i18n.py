"""The language switcher: an explicit choice of Dutch or English, remembered in the session.

`select_locale()` (in `eventsvc/__init__.py`) prefers `session["lang"]` over the
browser's Accept-Language, so the choice made here wins on every later request.

The switcher in every page's header is two plain links (`GET /taal?lang=en&next=/e/slug`),
as in pretix and pretalx. A link needs no CSRF token, so a page without a form of its own
(the upcoming list, the privacy statement, a registrant's page) gives a new visitor no
session cookie at all, and the shared page cache serves it as it is. Another site can make
a browser follow such a link; all it can do is pick this site's language for that visitor,
who can pick again. The link is `rel="nofollow"` and its answer is never cached or indexed.
A form posted from a page of an earlier version still works (with its CSRF token).
"""
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, has_request_context, redirect, request, session, url_for
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
    or Accept-Language says. (Flask-Babel keeps what it worked out on `g._flask_babel`: a context
    pushed for this request alone, as under gunicorn, has nothing to forget.)"""
    if "_flask_babel" in g._get_current_object().__dict__:
        refresh()


@bp.route("/taal", methods=["GET", "POST"])
def switch():
    values = request.form if request.method == "POST" else request.args
    lang = values.get("lang", "")
    if lang not in LANGUAGES:
        abort(400)
    session["lang"] = lang
    # Remembered for PERMANENT_SESSION_LIFETIME, not just this browser session; but never for a
    # login, which another site's link must not turn into one that outlives the browser.
    if "_user_id" not in session:
        session.permanent = True
    response = redirect(safe_next(values.get("next")), 303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@bp.app_context_processor
def switcher_context():
    """Where base.html's switcher links to; only inside a request (mails are rendered without one)."""
    if not has_request_context():
        return {}
    return {"language_switch_url": url_for("i18n.switch")}
