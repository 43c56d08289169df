"""CPU time of a registration's GET and POST, in one process, for eventsvc and the minimal-insert ceiling.

    python -m bench.inprocess                          # SQLite, 1,000 registrations per target
    python -m bench.inprocess --backends sqlite,postgresql --count 2000

Each target runs in its own process, through Flask's test client, one registration after
another (GET the form, POST it with a unique email), and reports the CPU time (process_time,
so waiting on the database server is not in it) per GET and per POST, and the median over
--repeat passes. For eventsvc it also reports the floor under every write: a unit of work (the
SQLite write turn, BEGIN, COMMIT) around one `SELECT 1` run on the driver (as the
registration's statements are), with the ORM session (transaction.unit_of_work), on a Core
connection (transaction.unit_of_work_on_connection, what a new registration uses), and on a
DBAPI connection taken straight from the pool.

Faster than bench.instructions and closer to what a worker spends, but timed, so the
machine's load moves it: compare runs made one right after the other.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

from .common import PYTHON, make_workdir
from .procs import ROOT
from .testclient import TARGETS, get_form, load_app, post_form, target_environment

SLUG = "bench-inprocess"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--count", type=int, default=1000, help="registrations per pass")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the median is shown")
    parser.add_argument("--drive", choices=TARGETS, help=argparse.SUPPRESS)  # in the child process
    args = parser.parse_args(argv)
    if args.drive:
        print(json.dumps(drive(args.drive, args.count, args.repeat)))
        return 0
    workdir = make_workdir()
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            for target in [t for t in args.targets.split(",") if t]:
                figures = run_target(target, backend, workdir, args.count, args.repeat)
                line = (f"{backend:10} {target:15} GET {figures['get_us']:6.0f} µs  POST {figures['post_us']:6.0f} µs"
                        f"  CPU per request")
                if "unit_of_work_us" in figures:
                    line += (f";  a unit of work around SELECT 1: with the session {figures['unit_of_work_us']:.0f} µs, "
                             f"on a Core connection {figures['on_connection_us']:.0f} µs, "
                             f"on a pooled DBAPI connection {figures['raw_us']:.0f} µs")
                print(line, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_target(target: str, backend: str, workdir, count: int, repeat: int) -> dict:
    with target_environment(target, backend, workdir, slug=SLUG, capacity=(count + 50) * repeat + 100,
                            label="inprocess") as env:
        out = subprocess.run([PYTHON, "-m", "bench.inprocess", "--drive", target, "--count", str(count),
                              "--repeat", str(repeat)], env=env, cwd=ROOT, check=True, timeout=1800,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])


def drive(target: str, count: int, repeat: int) -> dict:
    import logging

    app, path = load_app(target), f"/e/{SLUG}"
    if target == "eventsvc":
        logging.getLogger().handlers[0].setStream(open("/dev/null", "w"))  # the request log, written nowhere
    spent = {"get": 0.0, "post": 0.0}

    def register(n: int) -> None:
        client = app.test_client()  # a new visitor: no cookies
        started = time.process_time()
        token = get_form(client, path, n)
        spent["get"] += time.process_time() - started
        started = time.process_time()
        post_form(client, path, n, token, "inprocess")
        spent["post"] += time.process_time() - started

    n, gets, posts = 0, [], []
    for _ in range(50):  # warm-up: imports, templates, the pool
        register(n)
        n += 1
    for _ in range(repeat):
        spent.update(get=0.0, post=0.0)
        for _ in range(count):
            register(n)
            n += 1
        gets.append(spent["get"] / count * 1e6)
        posts.append(spent["post"] / count * 1e6)
    figures = {"get_us": statistics.median(gets), "post_us": statistics.median(posts)}
    if target == "eventsvc":
        figures.update(_unit_of_work_floor(app, count))
    return figures


def _unit_of_work_floor(app, count: int) -> dict:
    from eventsvc.extensions import db
    from eventsvc.transaction import unit_of_work, unit_of_work_on_connection

    with app.app_context():
        engine = db.engine
        sqlite = engine.dialect.name == "sqlite"

        def one_read(connection=None) -> None:
            # On the driver, inside the unit of work's transaction, as the registration's statements
            # run (prepared.py): what is left is the unit of work's own cost.
            cursor = (connection or db.session.connection()).connection.dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()

        def raw() -> None:
            connection = engine.raw_connection()
            try:
                cursor = connection.cursor()
                if sqlite:  # the app runs SQLite in autocommit and begins itself (extensions._begin)
                    cursor.execute("BEGIN IMMEDIATE")
                cursor.execute("SELECT 1")
                cursor.fetchall()
                if sqlite:
                    cursor.execute("COMMIT")
                else:
                    connection.commit()
                cursor.close()
            finally:
                connection.close()

        def timed(function) -> float:
            for _ in range(100):
                function()
            started = time.process_time()
            for _ in range(count):
                function()
            return (time.process_time() - started) / count * 1e6

        return {"unit_of_work_us": timed(lambda: unit_of_work(one_read)),
                "on_connection_us": timed(lambda: unit_of_work_on_connection(one_read)), "raw_us": timed(raw)}


if __name__ == "__main__":
    sys.exit(main())
