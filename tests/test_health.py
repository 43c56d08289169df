"""Health, readiness, the worker heartbeat, metrics and request logs."""
import io
import json
import logging
import re
import time
import uuid
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, update

from eventsvc.extensions import db
from eventsvc.types import utcnow
from tests.test_upgrade import app_on, script_directory, throwaway_database


def wire(app):
    """What create_app does once health and observability are wired; a no-op then."""
    from eventsvc import health
    from eventsvc.observability import EXTENSION_KEY, init_observability

    if "health" not in app.blueprints:
        app.register_blueprint(health.bp)
    if EXTENSION_KEY not in app.extensions:
        init_observability(app)
    outbox = app.cli.commands.get("outbox")
    if outbox is None or "status" not in getattr(outbox, "commands", {}):
        health.register_outbox_cli(app)
    return app


@pytest.fixture
def health_app(app):
    """The app with the health blueprint, metrics and the heartbeat table.

    Until the heartbeat table has its migration, this creates it for the test
    and afterwards drops it and takes it out of the shared metadata again, so
    the other test modules (which truncate every table of the metadata, and
    compare the metadata with the migrations) never see it. Once the migration
    exists the table is already there and all of that is skipped.
    """
    from eventsvc.health import WorkerHeartbeat

    table = WorkerHeartbeat.__table__
    if table.name not in db.metadata.tables:
        db.metadata._add_table(table.name, table.schema, table)
    created = not inspect(db.engine).has_table(table.name)
    if created:
        table.create(db.engine)
    wire(app)
    yield app
    if created:
        db.session.remove()
        table.drop(db.engine)
        db.metadata.remove(table)


@pytest.fixture
def http(health_app):
    return health_app.test_client()


def worker_id():
    return f"test-host:{uuid.uuid4().hex[:8]}"


def add_message(*, status="pending", due_in=timedelta(seconds=-1), created_ago=timedelta(seconds=5)):
    from eventsvc.outbox.models import Message

    now = utcnow()
    message = Message(kind="custom", dedupe_key=f"test:{uuid.uuid4().hex}", payload={}, status=status,
                      send_after=now + due_in, created_at=now - created_ago, attempts=0)
    db.session.add(message)
    db.session.commit()
    return message


def backdate_heartbeats(by):
    from eventsvc.health import WorkerHeartbeat

    db.session.execute(update(WorkerHeartbeat).values(beat_at=utcnow() - by))
    db.session.commit()


# ---------------------------------------------------------------- /healthz, /readyz

def test_healthz_says_ok_without_touching_the_database(health_app):
    from eventsvc.health import beat

    nowhere = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    with app_on(nowhere) as app:
        wire(app)
        client = app.test_client()
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok"}

        ready = client.get("/readyz")
        assert ready.status_code == 503
        body = ready.get_json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"]["ok"] is False
        assert beat(worker_id(), 0) is False  # a heartbeat that cannot be written never raises


def test_readyz_is_ok_with_a_fresh_heartbeat_and_an_empty_outbox(http):
    from eventsvc.health import beat

    assert beat(worker_id(), 0) is True
    response = http.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "migrations", "outbox", "worker"}
    assert all(check["ok"] for check in checks.values())
    assert checks["migrations"]["state"] == "current"
    assert checks["migrations"]["database"] == checks["migrations"]["code"]
    assert checks["outbox"]["backlog"] == 0
    assert checks["worker"]["workers_alive"] == 1
    assert checks["worker"]["heartbeat_age_seconds"] < 5
    assert "test-host" not in response.get_data(as_text=True)  # no host names in a public answer
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_fails_without_any_heartbeat(http):
    response = http.get("/readyz")
    assert response.status_code == 503
    worker = response.get_json()["checks"]["worker"]
    assert worker["ok"] is False and worker["heartbeat_age_seconds"] is None


def test_readyz_fails_when_the_worker_stopped(http):
    from eventsvc.health import beat

    beat(worker_id(), 3)
    assert http.get("/readyz").status_code == 200
    backdate_heartbeats(by=timedelta(minutes=5))  # the worker stopped beating five minutes ago
    response = http.get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["worker"]["ok"] is False
    assert checks["worker"]["heartbeat_age_seconds"] >= 300
    assert checks["worker"]["workers_alive"] == 0
    assert all(checks[name]["ok"] for name in ("database", "migrations", "outbox"))


def test_readyz_fails_when_the_backlog_is_over_the_threshold(http, health_app):
    from eventsvc.health import beat

    health_app.config["READY_MAX_BACKLOG"] = 2
    beat(worker_id(), 0)
    for _ in range(5):
        add_message(due_in=timedelta(days=2))  # scheduled for later: not backlog
    for _ in range(2):
        add_message()
    add_message(status="sent")
    assert http.get("/readyz").status_code == 200

    add_message()
    response = http.get("/readyz")
    assert response.status_code == 503
    outbox = response.get_json()["checks"]["outbox"]
    assert outbox["ok"] is False
    assert outbox["backlog"] == 3 and outbox["max_backlog"] == 2


def test_readyz_fails_when_the_oldest_due_message_waits_too_long(http, health_app):
    from eventsvc.health import beat

    beat(worker_id(), 0)
    add_message(due_in=timedelta(minutes=-5))
    assert http.get("/readyz").status_code == 200
    health_app.config["READY_MAX_PENDING_AGE_SECONDS"] = 60
    response = http.get("/readyz")
    assert response.status_code == 503
    outbox = response.get_json()["checks"]["outbox"]
    assert outbox["ok"] is False and outbox["oldest_due_age_seconds"] >= 300


def _ready_on(url):
    """GET /readyz of an app on `url` with a fresh heartbeat; returns (status, checks)."""
    from eventsvc.health import WorkerHeartbeat, beat

    with app_on(url) as other:
        wire(other)
        WorkerHeartbeat.__table__.create(db.engine, checkfirst=True)
        assert beat(worker_id(), 0, force=True)
        response = other.test_client().get("/readyz")
        return response.status_code, response.get_json()["checks"]


def test_readyz_fails_on_a_database_without_migrations(health_app, backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        with app_on(url):
            db.create_all()  # every table, but no alembic_version: nobody ran `flask db upgrade`
        status, checks = _ready_on(url)
    assert status == 503
    assert checks["migrations"]["ok"] is False
    assert checks["migrations"]["state"] == "none" and checks["migrations"]["database"] == []
    assert all(checks[name]["ok"] for name in ("database", "outbox", "worker"))


def test_readyz_fails_when_the_database_is_behind_the_code(health_app, backend, tmp_path):
    from flask_migrate import stamp, upgrade

    with throwaway_database(backend, tmp_path) as url:
        with app_on(url):
            upgrade()
            head = script_directory().get_revision("head")
            stamp(revision=head.down_revision or "base")  # as if the last `db upgrade` never ran
        status, checks = _ready_on(url)
    assert status == 503
    assert checks["migrations"]["ok"] is False
    assert checks["migrations"]["state"] in ("behind", "none")
    assert checks["migrations"]["code"] == [head.revision]


# ---------------------------------------------------------------- heartbeat and CLI

def test_beat_writes_at_most_once_per_interval(health_app):
    from eventsvc.health import WorkerHeartbeat, beat

    health_app.config["WORKER_HEARTBEAT_SECONDS"] = 60
    wid = worker_id()
    assert beat(wid, 1) is True
    assert beat(wid, 2) is False  # called on every loop iteration: nearly always a no-op
    row = db.session.get(WorkerHeartbeat, wid)
    assert row.sent == 1
    started = row.started_at
    db.session.rollback()

    health_app.config["WORKER_HEARTBEAT_SECONDS"] = 0
    assert beat(wid, 5) is True
    row = db.session.get(WorkerHeartbeat, wid, populate_existing=True)
    assert row.sent == 5 and row.started_at == started and row.beat_at >= started
    assert db.session.query(WorkerHeartbeat).count() == 1


def test_outbox_status_command(health_app):
    from eventsvc.health import beat

    wid = worker_id()
    beat(wid, 7)
    add_message()
    add_message(due_in=timedelta(hours=3))
    add_message(status="failed")
    runner = health_app.test_cli_runner()

    result = runner.invoke(args=["outbox", "status"])
    assert result.exit_code == 0, result.output
    assert "pending     2 (1 due now, 1 scheduled)" in result.output
    assert "failed      1" in result.output
    assert wid in result.output and "sent 7" in result.output and "alive" in result.output

    result = runner.invoke(args=["outbox", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["by_status"] == {"pending": 2, "sent": 0, "failed": 1, "superseded": 0}
    assert status["due"] == 1 and status["scheduled"] == 1
    assert [worker["worker_id"] for worker in status["workers"]] == [wid]


# ---------------------------------------------------------------- metrics

def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_expose_requests_registrations_outbox_and_delivery(http):
    from eventsvc.health import beat
    from eventsvc.observability import count_delivery_failure, count_registration, observe_delivery

    before = scrape(http)
    http.get("/healthz")
    http.get("/healthz")
    http.get("/no-such-page")
    count_registration("confirmed")
    count_registration("waitlisted")
    count_registration("something-odd")
    observe_delivery(3.2)
    count_delivery_failure("permanent")
    count_delivery_failure("what?")
    add_message()
    add_message()
    add_message(status="failed")
    beat(worker_id(), 0)
    after = scrape(http)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "eventsvc_http_requests_total"
    assert delta(requests, method="GET", endpoint="health.healthz", status="200") == 2
    assert delta(requests, method="GET", endpoint="unmatched", status="404") == 1
    assert delta("eventsvc_http_request_duration_seconds_count",
                 method="GET", endpoint="health.healthz", status="200") == 2
    assert delta("eventsvc_registrations_total", outcome="confirmed") == 1
    assert delta("eventsvc_registrations_total", outcome="waitlisted") == 1
    assert delta("eventsvc_registrations_total", outcome="other") == 1
    assert delta("eventsvc_outbox_delivery_latency_seconds_count") == 1
    assert delta("eventsvc_outbox_delivery_latency_seconds_bucket", le="5.0") == 1
    assert delta("eventsvc_outbox_delivery_failures_total", reason="permanent") == 1
    assert delta("eventsvc_outbox_delivery_failures_total", reason="other") == 1

    assert value(after, "eventsvc_outbox_collector_up") == 1
    assert value(after, "eventsvc_outbox_messages", state="pending") == 2
    assert value(after, "eventsvc_outbox_messages", state="failed") == 1
    assert value(after, "eventsvc_outbox_messages", state="sent") == 0
    assert value(after, "eventsvc_outbox_due_messages") == 2
    assert 0 <= value(after, "eventsvc_worker_heartbeat_age_seconds") < 5


def test_metrics_show_how_long_sqlite_writers_wait_for_and_hold_their_turn(http, backend):
    from eventsvc.transaction import unit_of_work

    before = scrape(http)
    unit_of_work(lambda: time.sleep(0.003))  # a unit of work that holds the turn for 3 ms
    after = scrape(http)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    held, waited = "eventsvc_sqlite_writer_hold_seconds", "eventsvc_sqlite_writer_wait_seconds"
    if backend == "postgresql":  # no turns: PostgreSQL has many writers
        assert delta(f"{held}_count") == delta(f"{waited}_count") == 0
        return
    assert delta(f"{held}_count") == delta(f"{waited}_count") == 1
    assert delta(f"{held}_bucket", le="0.0025") == 0 and delta(f"{held}_bucket", le="0.05") == 1
    assert delta(f"{waited}_bucket", le="0.05") == 1  # nobody else was writing


# ---------------------------------------------------------------- logs

@pytest.fixture
def log_output():
    """Every log line as the production (JSON) and the development formatter write it."""
    from eventsvc.observability import JsonFormatter, ReadableFormatter, RequestIdFilter

    streams = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = []
    for kind, formatter in (("json", JsonFormatter()), ("text", ReadableFormatter())):
        handler = logging.StreamHandler(streams[kind])
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        handlers.append(handler)
        logging.getLogger().addHandler(handler)
    yield streams
    for handler in handlers:
        logging.getLogger().removeHandler(handler)


def test_request_logs_carry_a_request_id_and_no_personal_data(http, health_app, make_event, register,
                                                             caplog, log_output):
    caplog.set_level(logging.INFO, logger="eventsvc.request")
    caplog.set_level(logging.INFO, logger="eventsvc")
    event = make_event()
    email = "Mieke.Jansen@example.org"
    registration = register(event, email=email, name="Mieke Jansen")
    token = registration.token

    given = http.get(f"/r/{token}?email={email}", headers={"X-Request-ID": "edge-4f2a.1"})
    assert given.status_code == 200
    assert given.headers["X-Request-ID"] == "edge-4f2a.1"
    generated = http.get(f"/r/{token}/annuleren", headers={"X-Request-ID": "no spaces\tor tabs"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert http.get(f"/r/{token}x/agenda.ics").status_code == 404
    with health_app.test_request_context(f"/r/{token}"):
        logging.getLogger("eventsvc.test").error("Exception on /r/%s [GET] for %s", token, email)

    records = [r for r in caplog.records if r.name == "eventsvc.request"]
    assert [r.path for r in records] == ["/r/<redacted>", "/r/<redacted>/annuleren", "/r/<redacted>/agenda.ics"]
    assert [r.status for r in records] == [200, 200, 404]
    assert records[0].request_id == "edge-4f2a.1"
    assert records[1].request_id == generated.headers["X-Request-ID"]
    assert all(r.method == "GET" and r.duration_ms >= 0 for r in records)

    lines = [json.loads(line) for line in log_output["json"].getvalue().splitlines()]
    request_lines = [line for line in lines if line["logger"] == "eventsvc.request"]
    assert request_lines[0]["request_id"] == "edge-4f2a.1"
    assert request_lines[0]["path"] == "/r/<redacted>" and request_lines[0]["status"] == 200
    assert {"ts", "level", "msg", "method", "duration_ms", "endpoint"} <= set(request_lines[0])
    assert any(line["msg"] == "Exception on /r/<redacted> [GET] for <email>" for line in lines)
    assert "GET /r/<redacted>/annuleren 200" in log_output["text"].getvalue()

    everything = "\n".join([log_output["json"].getvalue(), log_output["text"].getvalue(),
                            *(r.getMessage() for r in records)])
    for secret in (token, email, email.lower(), "Mieke Jansen", "example.org", "?email"):
        assert secret not in everything


def test_redact():
    from eventsvc.observability import loggable_path, redact

    assert loggable_path("/r/AbC_12-x/join?email=a@b.nl") == "/r/<redacted>/join"
    assert redact("GET https://x.test/r/tok123 from a.b+c@d.example.com") == \
        "GET https://x.test/r/<redacted> from <email>"
    assert redact("person%40example.org") == "<email>"
    assert redact("/e/some-event /healthz") == "/e/some-event /healthz"
