"""eventsvc: event and webinar registration."""
from functools import lru_cache
from pathlib import Path

from flask import Flask, has_request_context, request, session
from babel import Locale
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header
from werkzeug.routing import IntegerConverter

from config import config_for
from .extensions import (babel, close_session_safely, csrf, db, login_manager, mail, migrate,
                         ping_connections_after_idle)

PROJECT_DIR = Path(__file__).resolve().parent.parent


def create_app(config=None):
    """Build the app. `config` is a mapping of settings that override the environment."""
    overrides = dict(config or {})
    app = App(__name__, template_folder=str(PROJECT_DIR / "templates"),
                instance_path=str(PROJECT_DIR / "instance"))
    # (the instance folder itself comes from INSTANCE_DIR in the config)
    app.config.from_object(config_for(overrides.get("EVENTSVC_ENV")))
    app.config.update(overrides)
    Path(app.config["INSTANCE_DIR"]).mkdir(parents=True, exist_ok=True)
    from .sessions import SessionInterface

    app.session_interface = SessionInterface()

    from .observability import init_observability

    init_observability(app)  # first: its request id must exist before CSRF or the limiter refuse
    _init_extensions(app)
    app.url_map.converters["id"] = DatabaseId
    _register_blueprints(app)
    _register_template_helpers(app)

    from .errors import register_error_handlers
    from .cli import register_cli

    from .checks import enforce_production_safety, register_check_command
    from .health import register_outbox_cli
    from .security import init_security

    register_error_handlers(app)
    register_cli(app)
    register_outbox_cli(app)
    register_check_command(app)
    init_security(app)  # after every blueprint: rate limits attach to registered endpoints
    enforce_production_safety(app)  # last: refuses an unsafe production configuration
    return app


class App(Flask):
    """Flask, asking once per function whether it is a coroutine function. Flask asks
    before every call of a hook or a view, a dozen times per request, and the answer
    never changes (inspect.iscoroutinefunction walks the function's wrappers)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync = {}

    def ensure_sync(self, func):
        try:
            return self._sync[func]
        except KeyError:
            sync = self._sync[func] = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)


class DatabaseId(IntegerConverter):
    """A row id in a URL: 1 to 2³¹−1, so a huge number is a 404, never an integer
    overflow in PostgreSQL."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=2**31 - 1)


# Flask-Babel parses what the selector returns on every request; a Locale it takes as it is.
_LOCALES = {code: Locale.parse(code) for code in ("nl", "en")}


def select_locale():
    if not has_request_context():
        return None  # CLI and worker: the default, or what force_locale() says
    choice = session.get("lang")
    if choice in _LOCALES:
        return _LOCALES[choice]
    return _LOCALES[_best_language(request.headers.get("Accept-Language", ""))]


@lru_cache(maxsize=256)
def _best_language(accept_language: str) -> str:
    # Browsers send a handful of distinct headers: parse each once per process.
    return parse_accept_header(accept_language, LanguageAccept).best_match(("nl", "en")) or "nl"


def _init_extensions(app):
    db.init_app(app)
    app.teardown_appcontext(close_session_safely)  # runs before Flask-SQLAlchemy's (teardowns run in reverse)
    with app.app_context():
        for engine in db.engines.values():
            ping_connections_after_idle(engine, app.config["DATABASE_PING_AFTER_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=str(PROJECT_DIR / "migrations"), compare_type=True)
    csrf.init_app(app)
    from .sessions import csrf_token

    app.jinja_env.globals["csrf_token"] = csrf_token  # Flask-WTF's generate_csrf, with less work
    mail.init_app(app)
    babel.init_app(app, locale_selector=select_locale,
                   default_translation_directories=str(PROJECT_DIR / "translations"))
    login_manager.init_app(app)
    from .auth.models import load_organiser

    login_manager.user_loader(load_organiser)
    login_manager.login_view = "auth.login"
    from flask_babel import lazy_gettext

    login_manager.login_message = lazy_gettext("Log in om deze pagina te bekijken.")
    login_manager.login_message_category = "error"

    from . import models  # noqa: F401  (register every table with the metadata)
    from .page_cache import init_page_cache

    init_page_cache(app)


def _register_blueprints(app):
    from .events.views import bp as events_bp
    from .registrations.views import bp as registrations_bp

    from .admin.views import bp as admin_bp
    from .auth.views import bp as auth_bp

    app.register_blueprint(events_bp)
    app.register_blueprint(registrations_bp)
    from .health import bp as health_bp
    from .i18n import bp as i18n_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(i18n_bp)
    app.register_blueprint(health_bp)
    from .api import init_api

    init_api(app)
    if app.config["EVENTSVC_ENV"] == "development":
        from .devmail.views import devmail_bp

        app.register_blueprint(devmail_bp)


def _register_template_helpers(app):
    from flask_babel import get_locale

    from .formatting import format_moment, format_when, render_markdown

    def locale():
        return str(get_locale() or "nl")

    app.jinja_env.globals.update(current_locale=locale)
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.globals["when"] = lambda event, locale_=None: format_when(
        event.starts_at, event.ends_at, event.tz, locale_ or locale())
    app.jinja_env.globals["moment"] = lambda value, tz, locale_=None: format_moment(value, tz, locale_ or locale())
