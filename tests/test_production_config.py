"""Production safety: the app refuses to start with an unsafe configuration,
`flask --app wsgi check` reports it, and production sessions and headers are strict.

Until `create_app` calls them, `build()` calls `init_security`,
`register_check_command` and `enforce_production_safety` itself; once wired
the same tests prove the wiring.
"""
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config import DEFAULT_SECRET_KEY
from eventsvc import create_app
from eventsvc.checks import (
    UnsafeConfiguration, configuration_problems, enforce_production_safety, register_check_command)
from eventsvc.security import EXTENSION_KEY, init_security


ROOT = Path(__file__).resolve().parents[1]
GOOD_KEY = secrets.token_urlsafe(48)
PG_URL = "postgresql+psycopg://eventsvc:secret@db.example.org:5432/eventsvc"


def production(**overrides):
    """A production configuration without problems; tests spoil one setting at a time."""
    config = {
        "EVENTSVC_ENV": "production", "SECRET_KEY": GOOD_KEY, "SQLALCHEMY_DATABASE_URI": PG_URL,
        "BASE_URL": "https://events.example.org", "MAIL_SERVER": "smtp.example.org", "MAIL_PORT": 587,
        "INSTANCE_DIR": str(Path(os.environ.get("PYTEST_TMP", "/tmp")) / "eventsvc-test-instance"),
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    config.update(overrides)
    return config


def wire(app):
    if EXTENSION_KEY not in app.extensions:
        init_security(app)
    register_check_command(app)  # idempotent
    enforce_production_safety(app)  # what create_app does last, once wired
    return app


def build(config):
    return wire(create_app(config))


def refusal(config) -> str:
    with pytest.raises(RuntimeError) as raised:
        build(config)
    assert isinstance(raised.value, UnsafeConfiguration)
    return str(raised.value)


@pytest.fixture(autouse=True)
def _no_sqlite_opt_in(monkeypatch):
    monkeypatch.delenv("EVENTSVC_ALLOW_SQLITE", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)


# ------------------------------------------------------------- refusals

def test_good_production_configuration_starts():
    app = build(production())
    assert configuration_problems(app) == []
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_default_secret_key_refuses_to_start():
    message = refusal(production(SECRET_KEY=DEFAULT_SECRET_KEY))
    assert "SECRET_KEY is the built-in development key" in message


def test_short_secret_key_refuses_to_start():
    assert "SECRET_KEY is too short (31 characters" in refusal(production(SECRET_KEY="k" * 31))
    build(production(SECRET_KEY="k" * 32))  # 32 is enough


def test_sqlite_refuses_to_start_unless_allowed(monkeypatch, tmp_path):
    sqlite = f"sqlite:///{tmp_path / 'prod.sqlite3'}"
    assert "the database is SQLite" in refusal(production(SQLALCHEMY_DATABASE_URI=sqlite))
    build(production(SQLALCHEMY_DATABASE_URI=sqlite, ALLOW_SQLITE=True))
    monkeypatch.setenv("EVENTSVC_ALLOW_SQLITE", "1")
    build(production(SQLALCHEMY_DATABASE_URI=sqlite))
    monkeypatch.setenv("EVENTSVC_ALLOW_SQLITE", "0")
    assert "the database is SQLite" in refusal(production(SQLALCHEMY_DATABASE_URI=sqlite))


@pytest.mark.parametrize("server, port", [("", 25), (None, 25), ("127.0.0.1", 8025), ("localhost", 8025)])
def test_missing_or_development_mail_server_refuses_to_start(server, port):
    message = refusal(production(MAIL_SERVER=server, MAIL_PORT=port))
    assert "MAIL_SERVER" in message


def test_local_mail_relay_on_a_real_port_is_fine():
    build(production(MAIL_SERVER="127.0.0.1", MAIL_PORT=25))


@pytest.mark.parametrize("base_url", ["http://events.example.org", "events.example.org", "", "https://"])
def test_base_url_must_be_https(base_url):
    assert "BASE_URL must be the public https:// address" in refusal(production(BASE_URL=base_url))


def test_insecure_cookie_or_debug_refuses_to_start():
    assert "SESSION_COOKIE_SECURE is off" in refusal(production(SESSION_COOKIE_SECURE=False))
    assert "debug mode is on" in refusal(production(DEBUG=True))


def test_every_problem_is_listed_at_once():
    message = refusal(production(SECRET_KEY=DEFAULT_SECRET_KEY, SQLALCHEMY_DATABASE_URI="sqlite://",
                                 MAIL_SERVER="127.0.0.1", MAIL_PORT=8025, BASE_URL="http://127.0.0.1:5000"))
    assert message.count("\n  - ") == 4


def test_development_and_testing_are_not_refused(monkeypatch, tmp_path):
    """Safety follows EVENTSVC_ENV only: FLASK_DEBUG neither switches it on nor off."""
    monkeypatch.setenv("FLASK_DEBUG", "1")
    for env in ("development", "testing"):
        app = build({"EVENTSVC_ENV": env, "SECRET_KEY": DEFAULT_SECRET_KEY,
                     "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
                     "INSTANCE_DIR": str(tmp_path), "BASE_URL": "http://127.0.0.1:5000"})
        assert configuration_problems(app) == []
        assert not app.config.get("SESSION_COOKIE_SECURE")
        assert len(configuration_problems(app, production=True)) >= 3  # what `check --production` reports


# ------------------------------------------------------------ flask check

def test_check_command_exit_codes(tmp_path):
    good = build(production())
    result = good.test_cli_runner().invoke(args=["check"])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output
    assert "warning: rate limits are kept in process memory" in result.output

    development = build({"EVENTSVC_ENV": "development", "SECRET_KEY": DEFAULT_SECRET_KEY,
                         "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
                         "INSTANCE_DIR": str(tmp_path), "BASE_URL": "http://127.0.0.1:5000",
                         "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": 8025})
    plain = development.test_cli_runner().invoke(args=["check"])
    assert plain.exit_code == 0 and "configuration OK" in plain.output
    strict = development.test_cli_runner().invoke(args=["check", "--production"])
    assert strict.exit_code == 1, strict.output
    for problem in ("SECRET_KEY is the built-in development key", "the database is SQLite",
                    "MAIL_SERVER is the development mail sink", "BASE_URL must be the public https://"):
        assert f"problem: {problem}" in strict.output
    assert "configuration OK" not in strict.output


def _python(args, env_overrides, cwd, instance_dir):
    """`python ARGS` in a process of its own, with none of this shell's eventsvc settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTSVC_", "FLASK_", "MAIL_"))}
    env.update({"PYTHONPATH": str(ROOT), "EVENTSVC_INSTANCE_DIR": str(instance_dir), **env_overrides})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _flask_check(app_path, env_overrides, cwd):
    return _python(["-m", "flask", "--app", app_path, "check"], env_overrides, cwd, cwd / "instance")


PRODUCTION_ENV = {"EVENTSVC_ENV": "production", "SECRET_KEY": GOOD_KEY, "DATABASE_URL": PG_URL,
                  "BASE_URL": "https://events.example.org", "MAIL_SERVER": "smtp.example.org",
                  "MAIL_PORT": "587"}


@pytest.mark.slow
def test_check_in_a_real_process_reports_instead_of_crashing(tmp_path):
    """A bad production configuration cannot even build the app; the CLI then
    prints the problems as an error (no traceback) and exits 1."""
    (tmp_path / "wired.py").write_text(
        "from eventsvc import create_app\n"
        "from eventsvc.checks import enforce_production_safety, register_check_command\n"
        "from eventsvc.security import EXTENSION_KEY, init_security\n"
        "app = create_app()\n"
        "if EXTENSION_KEY not in app.extensions:\n"
        "    init_security(app)\n"
        "register_check_command(app)\n"
        "enforce_production_safety(app)\n")
    ok = _flask_check("wired", PRODUCTION_ENV, tmp_path)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr
    bad = _flask_check("wired", {**PRODUCTION_ENV, "SECRET_KEY": "short"}, tmp_path)
    assert bad.returncode == 1
    assert "Error: refusing to start with EVENTSVC_ENV=production" in bad.stderr
    assert "SECRET_KEY is too short (5 characters" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_flask_app_wsgi_check(tmp_path):
    ok = _flask_check("wsgi", PRODUCTION_ENV, ROOT)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr
    bad = _flask_check("wsgi", {**PRODUCTION_ENV, "SECRET_KEY": DEFAULT_SECRET_KEY}, ROOT)
    assert bad.returncode == 1 and "SECRET_KEY is the built-in development key" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_process_started_from_wsgi_keeps_its_startup_objects_out_of_full_collections(tmp_path):
    """gunicorn and the outbox worker load `wsgi`: what it builds is frozen, so a full
    collection walks only what requests made since (not a 70–90 ms pause for everyone)."""
    probe = ("import gc, wsgi\n"
             "print(gc.get_freeze_count(), len(gc.get_objects()), wsgi.app.name)\n")
    done = _python(["-c", probe], PRODUCTION_ENV, ROOT, tmp_path / "instance")
    assert done.returncode == 0, done.stderr
    frozen, tracked, name = done.stdout.split()
    assert name == "eventsvc"
    assert int(frozen) > 50_000 and int(tracked) < int(frozen) // 20, done.stdout


# ---------------------------------------- the running production app (DB)

PRODUCTION_APP = {"EVENTSVC_ENV": "production", "SECRET_KEY": GOOD_KEY, "BASE_URL": "https://eventsvc.test",
                  "ALLOW_SQLITE": True, "RATELIMIT_ENABLED": False}


@pytest.fixture
def app(app):  # the conftest app (SQLite and PostgreSQL), wired
    return wire(app)


@pytest.mark.parametrize("app_config", [PRODUCTION_APP], ids=["production"])
def test_production_session_cookie_is_secure_httponly_samesite(client, make_event):
    event = make_event()
    response = client.get(f"/e/{event.slug}")  # the form's CSRF token lives in the session
    assert response.status_code == 200
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "secure" in attributes and "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"


@pytest.mark.parametrize("app_config", [PRODUCTION_APP], ids=["production"])
def test_production_sends_hsts(client, make_event):
    event = make_event()
    response = client.get(f"/e/{event.slug}")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert client.get("/bestaat-niet").headers["Strict-Transport-Security"]


def test_testing_sends_no_hsts_and_plain_cookies(client, make_event):
    event = make_event()
    response = client.get(f"/e/{event.slug}")
    assert "Strict-Transport-Security" not in response.headers
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert "Secure" not in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize("app_config", [PRODUCTION_APP], ids=["production"])
def test_a_request_line_written_straight_to_the_log_handler_is_the_line_logging_writes(client, make_event):
    """In production nothing but the app's own JSON handler listens, and the request's line is
    written to it directly (observability._write_request_line). It must be the line the logging
    module writes through that handler when another handler listens too."""
    import io
    import json
    import logging

    from eventsvc.observability import JsonFormatter, RequestIdFilter

    root = logging.getLogger()
    [ours] = [handler for handler in root.handlers if getattr(handler, "_eventsvc", False)]
    other = logging.StreamHandler(io.StringIO())
    other.setFormatter(JsonFormatter())
    other.addFilter(RequestIdFilter())
    path = f"/e/{make_event().slug}?email=someone@example.org"
    kept, written = root.handlers[:], io.StringIO()
    kept_stream, make_record = ours.setStream(written), logging.getLogRecordFactory()
    records = []

    def counted(*args, **kwargs):
        record = make_record(*args, **kwargs)
        if record.name == "eventsvc.request":
            records.append(record)
        return record

    logging.setLogRecordFactory(counted)
    try:
        root.handlers = [ours]  # as in production (pytest's own capture set aside)
        assert client.get(path, headers={"X-Request-ID": "edge-1"}).status_code == 200
        assert records == []  # written without a LogRecord
        root.handlers = [ours, other]  # someone else listens: through logging, to both
        assert client.get(path, headers={"X-Request-ID": "edge-1"}).status_code == 200
        assert len(records) == 1
    finally:
        root.handlers = kept
        ours.setStream(kept_stream)
        logging.setLogRecordFactory(make_record)

    def request_lines(stream):
        return [line for line in map(json.loads, stream.getvalue().splitlines()) if line["logger"] == "eventsvc.request"]

    direct, through_ours = request_lines(written)
    [through_other] = request_lines(other.stream)
    assert through_ours == through_other
    assert list(direct) == list(through_other)  # the same fields in the same order
    for line in (direct, through_other):
        assert line["msg"] == f"GET {line['path']} 200 {line['duration_ms']:.1f} ms"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line.pop("ts"))
        line.pop("msg"), line.pop("duration_ms")
    assert direct == through_other == {"level": "INFO", "logger": "eventsvc.request", "request_id": "edge-1",
                                       "method": "GET", "path": path.split("?")[0], "status": 200,
                                       "endpoint": "events.show"}
