"""What every workload shares: throw-away databases, the app's environment, machine facts."""
from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

from .procs import BIN, ROOT, run_checked

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PYTHON = sys.executable
FLASK = [PYTHON, "-m", "flask", "--app", "wsgi"]
GUNICORN = [str(BIN / "gunicorn")] if (BIN / "gunicorn").exists() else [PYTHON, "-m", "gunicorn"]
# One secret per benchmark run, 64 characters, as production would have.
SECRET_KEY = secrets.token_hex(32)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@contextmanager
def throwaway_database(backend: str, workdir: Path, label: str):
    """Yield a DATABASE_URL for a new, empty database; drop it afterwards."""
    if backend == "sqlite":
        path = workdir / f"{label}-{uuid.uuid4().hex[:6]}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    import psycopg

    name = f"eventsvc_bench_{os.getpid()}_{label.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Production refuses a BASE_URL that is not the public https:// address (links in mails).
BASE_URL = "https://eventsvc.bench.example.org"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_databases() -> list[str]:
    """Drop throw-away databases left by a benchmark run that was killed (its PID is gone)."""
    import psycopg

    dropped = []
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            names = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'eventsvc_bench_%'").fetchall()]
            for name in names:
                pid = name.split("_")[2]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    dropped.append(name)
    except psycopg.OperationalError:
        pass
    return dropped


def make_workdir() -> Path:
    """A temp folder for this run; folders of killed runs (their PID is gone) are removed."""
    import tempfile

    for old in Path(tempfile.gettempdir()).glob("eventsvc-bench-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"eventsvc-bench-{os.getpid()}-"))


def app_env(database_url: str, instance_dir: Path, *, base_url: str = BASE_URL,
            mail_port: int = 9, extra: dict | None = None) -> dict:
    """The production-like environment the app, its CLI and its workers get."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "EVENTSVC_", "MAIL_", "OUTBOX_"))}
    env.update(
        EVENTSVC_ENV="production",
        SECRET_KEY=SECRET_KEY,
        DATABASE_URL=database_url,
        EVENTSVC_ALLOW_SQLITE="1",  # production refuses SQLite unless told; the benchmark measures both
        EVENTSVC_INSTANCE_DIR=str(instance_dir),
        BASE_URL=base_url,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(mail_port),
        MAIL_DEFAULT_SENDER="eventsvc <noreply@bench.example.org>",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        # As behind one TLS-terminating proxy: the load generator sends X-Forwarded-For (one address per
        # person) and X-Forwarded-Proto: https, so per-address rate limits see people, not 127.0.0.1.
        PROXY_FIX_HOPS="1",
    )
    env.update(extra or {})
    return env


def migrate(env: dict) -> None:
    run_checked([*FLASK, "db", "upgrade"], env, timeout=180, what="flask --app wsgi db upgrade")


def appdata(env: dict, *args: str, timeout: float = 300) -> dict:
    out = run_checked([PYTHON, "-m", "bench.appdata", *args], env, timeout=timeout,
                      what=f"bench.appdata {args[0]}")
    return json.loads(out.strip().splitlines()[-1])


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as error:  # noqa: BLE001
        info["postgresql"] = f"unreachable ({error.__class__.__name__})"
    try:
        from importlib.metadata import version

        info["versions"] = ", ".join(f"{p} {version(p)}" for p in
                                     ("gunicorn", "Flask", "SQLAlchemy", "psycopg", "aiosmtpd", "httpx"))
    except Exception:  # noqa: BLE001
        pass
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["commit"] = head + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    info["py_spy"] = shutil.which("py-spy") or "not installed"
    return info
