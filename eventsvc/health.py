"""Health: `/healthz`, `/readyz`, the worker heartbeat and `flask outbox status`.

- `GET /healthz`: the process is up and serving. No database, always 200.
  Use it for liveness probes and for the load balancer (see docs/deploy.md:
  a load balancer must not take every web process out because the *worker*
  or the mail server is down).
- `GET /readyz`: the service as a whole works. 200 when every check passes,
  503 otherwise; each check's result is in the JSON body:
  - `database`: `SELECT 1` succeeds;
  - `migrations`: the database's alembic revision is the head of the
    migrations shipped with this code (`flask --app wsgi db upgrade` ran);
  - `outbox`: pending rows that are due now (the backlog) ≤ READY_MAX_BACKLOG
    and the oldest of them is due for at most READY_MAX_PENDING_AGE_SECONDS;
  - `worker`: the newest worker heartbeat is younger than
    READY_MAX_HEARTBEAT_AGE_SECONDS (some worker is alive and looping).
  The body holds counts and ages only: no personal data, no host names.
- `beat(worker_id, sent)`: the worker loop calls it on every iteration; it
  writes at most one row every WORKER_HEARTBEAT_SECONDS per worker, in its own
  short transaction, and never raises.
- `outbox_status()`: counts by status, the due backlog, the oldest due age and
  the heartbeats, for `flask --app wsgi outbox status` (register_outbox_cli).
"""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta

import click
from flask import Blueprint, current_app, jsonify
from flask.cli import with_appcontext
from sqlalchemy import Integer, String, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

DEFAULTS = {
    "READY_MAX_BACKLOG": 10_000,
    "READY_MAX_PENDING_AGE_SECONDS": 900,
    "READY_MAX_HEARTBEAT_AGE_SECONDS": 120,
    "WORKER_HEARTBEAT_SECONDS": 10,
}
# Heartbeat rows of workers gone this long are deleted (a restarted worker has a new pid, so a new row).
HEARTBEAT_RETENTION = timedelta(days=1)
PRUNE_EVERY_SECONDS = 3600


def setting(name):
    return current_app.config.get(name, DEFAULTS[name])


class WorkerHeartbeat(db.Model):
    """The last sign of life of one worker process (`worker_id` is "host:pid")."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    sent: Mapped[int] = mapped_column(Integer, default=0)


# ---------------------------------------------------------------- heartbeat

_last_beat: dict[str, float] = {}
_last_prune = [0.0]
_beat_lock = threading.Lock()


def beat(worker_id: str, sent: int = 0, *, force: bool = False, now: datetime | None = None) -> bool:
    """Record that `worker_id` is alive and has sent `sent` messages since it started.

    Cheap to call on every loop iteration (and while sleeping): it writes at
    most once every WORKER_HEARTBEAT_SECONDS per worker, using its own
    connection (the caller's session and transaction are untouched). A failure
    is logged, never raised. Returns whether a row was written.
    """
    clock = time.monotonic()
    with _beat_lock:
        last = _last_beat.get(worker_id)
        if not force and last is not None and clock - last < setting("WORKER_HEARTBEAT_SECONDS"):
            return False
        _last_beat[worker_id] = clock  # also after a failure: do not hammer a database that is down
        prune = clock - _last_prune[0] >= PRUNE_EVERY_SECONDS or _last_prune[0] == 0.0
        if prune:
            _last_prune[0] = clock
    now = now or utcnow()
    table = WorkerHeartbeat.__table__
    try:
        with db.engine.begin() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = insert(table).values(
                worker_id=worker_id, hostname=socket.gethostname()[:255], started_at=now,
                beat_at=now, sent=int(sent))
            conn.execute(statement.on_conflict_do_update(
                index_elements=[table.c.worker_id],
                set_={"beat_at": statement.excluded.beat_at, "sent": statement.excluded.sent}))
            if prune:
                conn.execute(delete(table).where(table.c.beat_at < now - HEARTBEAT_RETENTION))
        return True
    except Exception as error:  # the heartbeat must never stop the worker
        log.warning("worker heartbeat not written: %s", type(error).__name__)
        return False


# ---------------------------------------------------------------- figures

def _outbox_figures(conn, now: datetime) -> dict:
    """Counts by status, the due backlog and the age of the oldest due pending row."""
    from .outbox.models import STATUSES, Message

    messages = Message.__table__
    by_status = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
            select(messages.c.status, func.count()).group_by(messages.c.status)):
        by_status[status] = count
    due = (messages.c.status == "pending") & (messages.c.send_after <= now)
    backlog, oldest = conn.execute(
        select(func.count(), func.min(messages.c.send_after)).where(due)).one()
    return {
        "by_status": by_status,
        "due": backlog,
        "scheduled": by_status.get("pending", 0) - backlog,
        "oldest_due_age_seconds": _age(oldest, now) if oldest is not None else 0.0,
    }


def _heartbeats(conn, now: datetime) -> list[dict]:
    table = WorkerHeartbeat.__table__
    rows = conn.execute(select(table).order_by(table.c.beat_at.desc())).mappings()
    return [{"worker_id": row["worker_id"], "hostname": row["hostname"],
             "started_at": row["started_at"].isoformat(), "beat_at": row["beat_at"].isoformat(),
             "age_seconds": _age(row["beat_at"], now), "sent": row["sent"]} for row in rows]


def _newest_heartbeat(conn, now: datetime) -> tuple[float | None, int]:
    """(age of the newest heartbeat or None, number of workers that beat in time)."""
    table = WorkerHeartbeat.__table__
    limit = now - timedelta(seconds=setting("READY_MAX_HEARTBEAT_AGE_SECONDS"))
    newest, alive = conn.execute(select(
        func.max(table.c.beat_at),
        func.count().filter(table.c.beat_at >= limit))).one()
    return (_age(newest, now) if newest is not None else None), alive


def _age(moment: datetime, now: datetime) -> float:
    return round(max((now - moment).total_seconds(), 0.0), 1)


def outbox_status(now: datetime | None = None) -> dict:
    """What `flask outbox status` prints: outbox counts, the backlog, the heartbeats."""
    now = now or utcnow()
    with db.engine.connect() as conn:
        figures = _outbox_figures(conn, now)
        figures["workers"] = _heartbeats(conn, now)
        conn.rollback()
    figures["max_heartbeat_age_seconds"] = setting("READY_MAX_HEARTBEAT_AGE_SECONDS")
    return figures


# ---------------------------------------------------------------- migrations

# MigrationContext.configure() logs "Context impl …" at INFO: fine for `flask db
# upgrade`, noise on every readiness probe. Silenced only while a probe reads.
_quiet_alembic = contextvars.ContextVar("eventsvc_quiet_alembic", default=False)


class _QuietAlembicFilter(logging.Filter):
    def filter(self, record):
        return not _quiet_alembic.get()


_alembic_log = logging.getLogger("alembic.runtime.migration")
if not any(isinstance(f, _QuietAlembicFilter) for f in _alembic_log.filters):
    _alembic_log.addFilter(_QuietAlembicFilter())


@functools.lru_cache(maxsize=8)
def _script_heads(directory: str) -> tuple[str, ...]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", directory)
    return tuple(sorted(ScriptDirectory.from_config(config).get_heads()))


@functools.lru_cache(maxsize=8)
def _known_revisions(directory: str) -> frozenset[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", directory)
    return frozenset(script.revision for script in ScriptDirectory.from_config(config).walk_revisions())


def migration_state(conn) -> dict:
    """Compare the database's alembic revision with the code's head.

    `current`: equal. `behind`: the database is at an older revision of this
    code (run `flask db upgrade`). `none`: no revision recorded. `unknown`: the
    database carries a revision this code does not know — a newer release ran
    its migrations (a rolling upgrade) or the database belongs to another
    branch; that is reported but not counted as a failure, so old web processes
    stay in service while a release replaces them (see docs/deploy.md).
    """
    from alembic.migration import MigrationContext

    directory = current_app.extensions["migrate"].directory
    code = _script_heads(str(directory))
    token = _quiet_alembic.set(True)
    try:
        database = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    finally:
        _quiet_alembic.reset(token)
    if database == code:
        state = "current"
    elif not database:
        state = "none"
    elif set(database) <= _known_revisions(str(directory)):
        state = "behind"
    else:
        state = "unknown"
    return {"ok": state in ("current", "unknown"), "state": state,
            "database": list(database), "code": list(code)}


# ---------------------------------------------------------------- views

@bp.get("/healthz")
def healthz():
    response = jsonify(status="ok")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/readyz")
def readyz():
    checks = readiness()
    ok = all(check["ok"] for check in checks.values())
    response = jsonify(status="ok" if ok else "unavailable", checks=checks)
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def readiness(now: datetime | None = None) -> dict:
    """Run every readiness check; a failing check never stops the others."""
    now = now or utcnow()
    checks = {}
    try:
        conn = db.engine.connect()
    except Exception as error:
        log.warning("readiness: database unreachable: %s", type(error).__name__)
        failed = {"ok": False, "error": "database unreachable"}
        return {"database": failed, "migrations": dict(failed), "outbox": dict(failed), "worker": dict(failed)}
    with conn:
        checks["database"] = _check(conn, "database", lambda: _database_check(conn))
        checks["migrations"] = _check(conn, "migrations", lambda: migration_state(conn))
        checks["outbox"] = _check(conn, "outbox", lambda: _outbox_check(conn, now))
        checks["worker"] = _check(conn, "worker", lambda: _worker_check(conn, now))
    return checks


def _check(conn, name, run):
    try:
        result = run()
        conn.rollback()
        return result
    except Exception as error:  # report it as this check's failure; go on with the others
        log.warning("readiness check %s failed: %s", name, type(error).__name__)
        try:
            conn.rollback()
        except Exception:
            pass
        return {"ok": False, "error": type(error).__name__}


def _database_check(conn):
    conn.execute(text("SELECT 1")).scalar_one()
    return {"ok": True}


def _outbox_check(conn, now):
    figures = _outbox_figures(conn, now)
    max_backlog = setting("READY_MAX_BACKLOG")
    max_age = setting("READY_MAX_PENDING_AGE_SECONDS")
    return {
        "ok": figures["due"] <= max_backlog and figures["oldest_due_age_seconds"] <= max_age,
        "backlog": figures["due"], "max_backlog": max_backlog,
        "oldest_due_age_seconds": figures["oldest_due_age_seconds"], "max_pending_age_seconds": max_age,
        "failed": figures["by_status"].get("failed", 0),
    }


def _worker_check(conn, now):
    age, alive = _newest_heartbeat(conn, now)
    max_age = setting("READY_MAX_HEARTBEAT_AGE_SECONDS")
    return {"ok": age is not None and age <= max_age, "heartbeat_age_seconds": age,
            "max_heartbeat_age_seconds": max_age, "workers_alive": alive}


# ---------------------------------------------------------------- CLI

def register_outbox_cli(app):
    """`flask --app wsgi outbox status`. Joins an existing `outbox` group if there is one."""
    group = app.cli.commands.get("outbox")
    if not isinstance(group, click.Group):
        @app.cli.group("outbox")
        def group():
            """The outbox: what is queued, what failed, which workers are alive."""

    @group.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @with_appcontext
    def status_command(as_json):
        """Counts by status, the due backlog, the oldest due age and the worker heartbeats."""
        status = outbox_status()
        if as_json:
            click.echo(json.dumps(status, indent=2))
            return
        counts = status["by_status"]
        click.echo(f"pending     {counts.get('pending', 0)} ({status['due']} due now, "
                   f"{status['scheduled']} scheduled)")
        for name in ("sent", "failed", "superseded"):
            click.echo(f"{name:<11} {counts.get(name, 0)}")
        click.echo(f"oldest due  {status['oldest_due_age_seconds']:.0f} s")
        limit = status["max_heartbeat_age_seconds"]
        if not status["workers"]:
            click.echo("workers     none has reported a heartbeat")
        else:
            click.echo("workers")
            for worker in status["workers"]:
                state = "alive" if worker["age_seconds"] <= limit else "stopped?"
                click.echo(f"  {worker['worker_id']:<40} last beat {worker['age_seconds']:.0f} s ago, "
                           f"sent {worker['sent']}, {state}")

    return group
