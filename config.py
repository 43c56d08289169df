"""Configuration read from the environment.

`EVENTSVC_ENV` (development, testing, production) decides behaviour that
matters for safety; `FLASK_DEBUG` never does.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_PATH = Path(os.environ.get("EVENTSVC_INSTANCE_DIR") or BASE_DIR / "instance")
DEFAULT_SECRET_KEY = "dev-only-not-secret"


def _bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name, default):
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def database_url():
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_PATH / 'eventsvc.sqlite3'}"
    # Accept the common postgres:// spellings and use psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Config:
    EVENTSVC_ENV = os.environ.get("EVENTSVC_ENV", "development")
    SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
    SQLALCHEMY_DATABASE_URI = database_url()
    SQLALCHEMY_ENGINE_OPTIONS = {}
    # A pooled connection idle this long is tested before use (one round trip); see
    # extensions.ping_connections_after_idle. 0 tests every connection every time.
    DATABASE_PING_AFTER_IDLE_SECONDS = _int("DATABASE_PING_AFTER_IDLE_SECONDS", 10)
    BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    SITE_NAME = os.environ.get("SITE_NAME", "eventsvc")
    INSTANCE_DIR = str(INSTANCE_PATH)

    DEFAULT_TIMEZONE = os.environ.get("EVENTSVC_TIMEZONE", "Europe/Amsterdam")
    BABEL_DEFAULT_LOCALE = "nl"
    LANGUAGES = ("nl", "en")
    REMINDER_LEAD_MINUTES = _int("EVENTSVC_REMINDER_LEAD_MINUTES", 60)
    JOIN_WINDOW_MINUTES = _int("EVENTSVC_JOIN_WINDOW_MINUTES", 15)

    MAIL_SERVER = os.environ.get("MAIL_SERVER", "127.0.0.1")
    MAIL_PORT = _int("MAIL_PORT", 8025)
    MAIL_USE_TLS = _bool("MAIL_USE_TLS")
    MAIL_USE_SSL = _bool("MAIL_USE_SSL")
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER", "eventsvc <noreply@eventsvc.localhost>")
    MAIL_TIMEOUT = _int("MAIL_TIMEOUT", 20)
    DEVMAIL_DIR = str(INSTANCE_PATH / "devmail")

    OUTBOX_BATCH_SIZE = _int("OUTBOX_BATCH_SIZE", 50)
    OUTBOX_LEASE_SECONDS = _int("OUTBOX_LEASE_SECONDS", 300)
    OUTBOX_MAX_ATTEMPTS = _int("OUTBOX_MAX_ATTEMPTS", 8)
    OUTBOX_RETRY_BASE_SECONDS = _int("OUTBOX_RETRY_BASE_SECONDS", 60)

    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
    MAX_CONTENT_LENGTH = 256 * 1024
    # Rendered public pages kept per process (eventsvc/page_cache.py); 0 turns the cache off.
    PAGE_CACHE_SIZE = _int("PAGE_CACHE_SIZE", 256)
    # How long a process may reuse the data read to check a cached page; 0 = read it for every visitor.
    PAGE_CACHE_RECHECK_SECONDS = _float("PAGE_CACHE_RECHECK_SECONDS", 1.0)
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    REGISTRATION_RATE_LIMIT = os.environ.get("REGISTRATION_RATE_LIMIT", "10 per minute; 100 per hour")
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "5 per minute; 30 per hour")
    REGISTRATIONS_PER_ADDRESS_PER_HOUR = _int("REGISTRATIONS_PER_ADDRESS_PER_HOUR", 10)
    PROXY_FIX_HOPS = _int("PROXY_FIX_HOPS", 0)
    ALLOW_SQLITE = _bool("EVENTSVC_ALLOW_SQLITE")
    PURGE_AFTER_DAYS = _int("EVENTSVC_PURGE_AFTER_DAYS", 90)

    READY_MAX_BACKLOG = _int("READY_MAX_BACKLOG", 10000)
    READY_MAX_PENDING_AGE_SECONDS = _int("READY_MAX_PENDING_AGE_SECONDS", 900)
    READY_MAX_HEARTBEAT_AGE_SECONDS = _int("READY_MAX_HEARTBEAT_AGE_SECONDS", 120)
    WORKER_HEARTBEAT_SECONDS = _int("WORKER_HEARTBEAT_SECONDS", 10)
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    WORKER_METRICS_PORT = _int("WORKER_METRICS_PORT", 0)  # 0 = off
    WORKER_METRICS_ADDR = os.environ.get("WORKER_METRICS_ADDR", "127.0.0.1")
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    PERMANENT_SESSION_LIFETIME = 60 * 60 * 24 * 30


class ProductionConfig(Config):
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"


class TestingConfig(Config):
    EVENTSVC_ENV = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production"
    MAIL_SUPPRESS_SEND = False  # tests talk SMTP to a real (local) server
    RATELIMIT_ENABLED = False  # the suite posts many forms from 127.0.0.1; test_security turns it on
    PAGE_CACHE_RECHECK_SECONDS = 0  # every change shows at once; test_page_cache sets a window itself


CONFIGS = {"development": Config, "production": ProductionConfig, "testing": TestingConfig}


def config_for(env=None):
    return CONFIGS.get(env or os.environ.get("EVENTSVC_ENV", "development"), Config)
