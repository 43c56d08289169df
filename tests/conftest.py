"""Fixtures: the app on SQLite and on PostgreSQL, a real SMTP server, factories.

Every test that uses `app` runs twice, once per backend. PostgreSQL gets a
throw-away database per run; when it cannot be reached the PostgreSQL half is
skipped locally and fails loudly in CI (CI=true).
"""
import contextlib
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from eventsvc import create_app
from eventsvc.extensions import db as _db

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("TEST_BACKENDS", "sqlite,postgresql").split(",") if b]


def _pg_url(dbname):
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@contextlib.contextmanager
def throwaway_database(backend, directory):
    """Yield the URL of a new, empty database of this backend; drop it afterwards.

    PostgreSQL unreachable: a skip locally, a failure in CI (CI=true)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / f'throwaway-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    name = f"eventsvc_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and unreachable at {PG_ADMIN_URL}: {error}")
        pytest.skip(f"PostgreSQL unreachable ({error}); set TEST_BACKENDS=sqlite to silence")
    try:
        yield _pg_url(name).replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory):
    """A migrated, empty database for this run: SQLite file or PostgreSQL database."""
    with throwaway_database(request.param, tmp_path_factory.mktemp("db")) as url:
        _migrate(url)
        yield url


def _migrate(url):
    from flask_migrate import upgrade

    app = create_app(test_config(url))
    with app.app_context():
        upgrade()
        _db.engine.dispose()


def test_config(url, **overrides):
    config = {
        "EVENTSVC_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": url,
        "BASE_URL": "http://eventsvc.test",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": 1,  # no server unless a test starts one (smtp fixture)
        "MAIL_DEFAULT_SENDER": "eventsvc <noreply@eventsvc.test>",
        "INSTANCE_DIR": str(Path(os.environ.get("PYTEST_TMP", "/tmp")) / "eventsvc-test-instance"),
        "OUTBOX_RETRY_BASE_SECONDS": 1,
    }
    config.update(overrides)
    return config


test_config.__test__ = False  # not a test, despite its name


@pytest.fixture
def app_config():
    """Tests override settings by updating this dict before `app` is built."""
    return {}


@pytest.fixture
def app(database_url, app_config):
    app = create_app(test_config(database_url, **app_config))
    with app.app_context():
        yield app
        _db.session.remove()
        _truncate_all()
        _db.engine.dispose()


def _truncate_all():
    tables = [t.name for t in reversed(_db.metadata.sorted_tables)]
    with _db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def backend(database_url):
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def make_event(app, now):
    from eventsvc.events.models import Event

    counter = iter(range(1, 10_000))

    def make(**fields):
        n = next(counter)
        values = dict(
            slug=f"event-{n}", title=f"Bijeenkomst {n}", summary="Korte samenvatting",
            description="Een **beschrijving**.", audience="Schoolbestuurders", organised_by="Alliantie",
            contact_name="Mieke van den Berg", contact_email="mieke@example.org",
            mode="online", join_url="https://meet.example.org/secret-room-42", timezone="Europe/Amsterdam",
            starts_at=now + timedelta(days=14), status="published", capacity=None,
        )
        values.update(fields)
        values.setdefault("ends_at", values["starts_at"] + timedelta(hours=1, minutes=15))
        event = Event(**values)
        _db.session.add(event)
        _db.session.commit()
        return event

    return make


@pytest.fixture
def register(app):
    """Register through the service, as the form does."""
    from eventsvc.registrations.services import register as register_service

    counter = iter(range(1, 100_000))

    def do(event, email=None, **fields):
        n = next(counter)
        fields.setdefault("name", f"Deelnemer {n}")
        return register_service(event, email=email or f"person{n}@example.org", **fields).registration

    return do


@pytest.fixture
def smtp(app):
    """A real SMTP server on 127.0.0.1; the app is pointed at it."""
    from eventsvc.devmail.sink import MailSink

    sink = MailSink().start()
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=sink.port)
    app.extensions["mail"].server, app.extensions["mail"].port = "127.0.0.1", sink.port
    yield sink
    sink.stop()


def admin_connection(database_url):
    """A plain autocommit connection to the test's PostgreSQL database, from outside the app."""
    return psycopg.connect(_pg_url(database_url.rsplit("/", 1)[1]), autocommit=True)


def csrf_token(client, path):
    """GET a form page and return the CSRF token it carries."""
    import re

    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or \
        re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)
