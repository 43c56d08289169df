"""`make bench` / `python -m bench.run`: every workload, its ceilings, one table.

    python -m bench.run                                  # the default run (~10 minutes on 2 cores)
    python -m bench.run --workloads register --backends sqlite --users 32 --duration 3
    python -m bench.run --workloads fanout --fanout-large  # adds the 100,000-registrant memory run
    python -m bench.run --profile                        # cProfile the app under the 32-user burst

Workloads (`--workloads`, comma-separated):
  register  registration burst: eventsvc vs the bare-Flask and minimal-insert
            ceilings, at each of `--users`, per backend and gunicorn variant
  pages     public pages (event page, /, /feed.ics) vs bare Flask, 32 clients
  fanout    reschedule fan-out to a counting SMTP sink vs a plain smtplib loop

Every server runs on 127.0.0.1 under gunicorn with the production config, in a
throw-away database that is dropped afterwards; every process started is
stopped by its PID when its block ends (also on Ctrl-C or an error). The
table is printed and written to bench/results/latest.md (+ latest.json).
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import report
from .report import REGISTRATION_TARGET_USERS
from .common import (GUNICORN, PYTHON, app_env, appdata, drop_stale_databases, machine_info, make_workdir,
                     migrate, sqlalchemy_url, throwaway_database)
from .procs import HOST, ROOT, CpuMeter, Processes, free_port, install_sigterm_as_interrupt, run_checked

RESULTS = ROOT / "bench" / "results"
TARGETS = ("bare-flask", "minimal-insert", "eventsvc")
MODULES = {"bare-flask": "bench.ceilings.bare_flask:app", "minimal-insert": "bench.ceilings.minimal_insert:app",
           "eventsvc": "wsgi:app"}


@dataclass(frozen=True)
class Variant:
    """A gunicorn set-up: `sync` (2 sync workers) or `gthread:N` (2 workers × N threads)."""
    spec: str
    workers: int
    threads: int

    @classmethod
    def parse(cls, spec: str, workers: int) -> Variant:
        kind, _, n = spec.partition(":")
        if kind == "sync":
            return cls(f"{workers}w sync", workers, 1)
        if kind == "gthread":
            threads = int(n or 4)
            return cls(f"{workers}w×{threads}t gthread", workers, threads)
        raise ValueError(f"unknown server variant {spec!r} (sync or gthread:N)")

    def argv(self, module: str, port: int, extra: list[str] = ()) -> list[str]:
        argv = [*GUNICORN, "--workers", str(self.workers), "--bind", f"{HOST}:{port}",
                "--graceful-timeout", "5", "--timeout", "60", "--log-level", "warning", "--backlog", "2048"]
        if Path("/dev/shm").is_dir():
            argv += ["--worker-tmp-dir", "/dev/shm"]
        if self.threads > 1:
            # As docs/deploy.md: each worker its own listening socket, so the kernel spreads connections
            # over the workers. Without it they race for accept(), and a gthread worker keeps the
            # keep-alive connections it won: one worker often served every client while the other idled
            # (the `busiest worker` column showed 100%), and a step measured luck, not the server.
            # Sync workers keep no connection, and one shared queue serves them better: with a queue
            # each, a request waits behind a busy worker while the other is free (p99 at 32 users
            # 203–366 ms with --reuse-port, 138–221 ms without, at the same throughput).
            argv += ["--reuse-port", "--worker-class", "gthread", "--threads", str(self.threads),
                     "--keep-alive", "5"]
        return argv + list(extra) + [module]


class Bench:
    def __init__(self, args, procs: Processes, workdir: Path):
        self.args, self.procs, self.workdir = args, procs, workdir
        self.results: list[dict] = []
        self.verifications: list[dict] = []
        self.page_notes: list[str] = []
        self.fanout: dict | None = None
        self.logdir = RESULTS / "logs"

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- load ---------------------------------------------------------------------
    def loadgen(self, mode: str, urls: list[str], users: int, *, count: int, duration: float,
                warmup: float = 0.0, label: str = "", extra: list[str] = (), server=None) -> dict:
        """Run bench.loadgen; with `server` (its Proc), also meter the CPU its process tree used."""
        if server is not None:
            with CpuMeter(server.pid) as meter:
                result = self.loadgen(mode, urls, users, count=count, duration=duration, warmup=warmup,
                                      label=label, extra=extra)
            work = result["completed"]
            result.update(server_cpu_s=round(meter.server, 3),
                          server_cores=round(meter.server / max(result["elapsed_s"], 1e-9), 2),
                          cpu_ms_per_iteration=round(meter.server * 1000 / work, 2) if work else None,
                          machine_busy_cores=round(meter.machine_busy_cores, 2),
                          busiest_worker_share=(round(meter.busiest_worker_share, 2)
                                                if meter.busiest_worker_share is not None else None))
            return result
        argv = [PYTHON, "-m", "bench.loadgen", mode, "--users", str(users), "--count", str(count),
                "--duration", str(duration), "--warmup", str(warmup), "--timeout", str(self.args.timeout),
                "--engine", self.args.engine, "--label", label, *extra]
        for url in urls:
            argv += ["--url", url]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = run_checked(argv, env, timeout=warmup + duration + self.args.timeout + 60, what="bench.loadgen")
        return json.loads(out.strip().splitlines()[-1])

    def record(self, workload: str, backend: str, variant: Variant, target: str, result: dict, **extra) -> dict:
        row = dict(workload=workload, backend=backend, server=variant.spec, target=target, **extra, **result)
        self.results.append(row)
        errors = f", errors {row['errors']}" if row["error_count"] else ""
        what = "reg/s" if workload == "register" else "req/s"
        self.say(f"  {backend:10} {variant.spec:18} {target:15} {extra.get('page', '')}{row['users']:4} users: "
                 f"{row['rate_per_s']:8.1f} {what}, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                 f"client CPU {row['client_cpu']}{errors}")
        for kind, sample in row.get("error_samples", {}).items():
            self.say(f"    {kind}: {sample}")
        return row

    # -- servers --------------------------------------------------------------------
    def start_servers(self, variant: Variant, envs: dict[str, dict], targets, extra=()) -> dict[str, tuple]:
        servers = {}
        for target in targets:
            port = free_port()
            env = envs[target]
            name = f"{target}-{variant.workers}w{variant.threads}t-{port}"
            proc = self.procs.start(name, variant.argv(MODULES[target], port, extra), env)
            servers[target] = (port, proc)
        for target, (port, proc) in servers.items():
            proc.wait_for_port(port, timeout=60)
        return servers

    def stop_servers(self, servers: dict) -> None:
        for _port, proc in servers.values():
            self.procs.stop(proc)

    # -- registration burst and public pages, per backend -------------------------
    def web(self, backend: str) -> None:
        a = self.args
        variants = [Variant.parse(v, a.workers) for v in a.servers.split(",") if v]
        instance = self.workdir / f"instance-{backend}"
        self.say(f"{backend}: creating throw-away databases and migrating")
        with throwaway_database(backend, self.workdir, "app") as app_db, \
                throwaway_database(backend, self.workdir, "ceiling") as ceiling_db:
            env_app = app_env(app_db, instance, extra=a.app_env)
            env_ceiling = app_env(ceiling_db, instance)
            migrate(env_app)
            run_checked([PYTHON, "-c", "import bench.ceilings.minimal_insert"], env_ceiling, 120,
                        "creating the minimal-insert ceiling's table")
            events = []
            for variant in variants:
                tag = f"{variant.workers}w{variant.threads}t"
                events.append({"slug": f"bench-warmup-{tag}", "capacity": a.warmup_capacity})
                # The largest burst gets a small capacity, so the event fills up while the most users race
                # for the last seats (that is where overbooking would show); the others stay below capacity
                # (by default room for every registration their rounds may make), so that they measure
                # confirmed registrations alone.
                events += [{"slug": f"bench-{tag}-u{u}",
                            "capacity": a.race_capacity if u == max(a.users) and len(a.users) > 1
                            else a.capacity or a.count * rounds_at(a, u)}
                           for u in a.users]
            appdata(env_app, "create-events", json.dumps(events))
            envs = {"eventsvc": env_app, "minimal-insert": env_ceiling, "bare-flask": env_ceiling}
            completed = 0
            for variant in variants:
                completed += self.web_variant(backend, variant, envs)
            self.verify(backend, app_db, completed)

    def web_variant(self, backend: str, variant: Variant, envs: dict) -> int:
        a = self.args
        tag = f"{variant.workers}w{variant.threads}t"
        self.say(f"{backend}: gunicorn {variant.spec}: starting eventsvc and both ceilings")
        servers = self.start_servers(variant, envs, TARGETS)
        url = lambda target, path: f"http://{HOST}:{servers[target][0]}{path}"  # noqa: E731
        completed = 0
        try:
            # Warm every worker (imports, template compilation, connection pools) before measuring.
            for target in TARGETS:
                path = f"/e/bench-warmup-{tag}"
                warm = self.loadgen("register", [url(target, path)], 8, count=a.count, duration=a.warmup,
                                    label=f"warm-{backend}-{tag}")
                if target == "eventsvc":
                    completed += warm["completed"]
                    if warm["error_count"]:
                        self.say(f"  warm-up errors on eventsvc: {warm['errors']} {warm['error_samples']}")
            if "register" in a.workloads:
                for users in a.users:
                    for round_ in range(rounds_at(a, users)):
                        # Alternate the order, so drift on a noisy machine does not always favour one side.
                        for target in (TARGETS if round_ % 2 == 0 else TARGETS[::-1]):
                            result = self.loadgen("register", [url(target, f"/e/bench-{tag}-u{users}")], users,
                                                  count=a.count, duration=a.duration,
                                                  label=f"{backend}-{tag}-u{users}-r{round_}",
                                                  server=servers[target][1])
                            self.record("register", backend, variant, target, result, round=round_)
                            if target == "eventsvc":
                                completed += result["completed"]
            if "pages" in a.workloads:
                self.pages(backend, variant, url, tag, servers)
        finally:
            self.stop_servers(servers)
        return completed

    def pages(self, backend: str, variant: Variant, url, tag: str, servers: dict) -> None:
        a = self.args
        event_path = f"/e/bench-{tag}-u{a.users[len(a.users) // 2]}" if "register" in a.workloads \
            else f"/e/bench-warmup-{tag}"
        # /healthz touches neither the database nor a template: the cost of the app's request
        # stack alone (session, CSRF, rate limiter, headers, logs, metrics), the floor under every page.
        pages = [("event page", event_path), ("upcoming /", "/"), ("iCal /feed.ics", "/feed.ics"),
                 ("stack floor /healthz", "/healthz")]
        extra = ["--conditional"] if a.conditional else []
        for name, path in pages:
            status = probe(url("eventsvc", path))
            if status != 200:
                note = f"{name} ({path}) answered {status} on {backend}/{variant.spec}: skipped"
                if note not in self.page_notes:
                    self.page_notes.append(note)
                self.say("  " + note)
                continue
            targets = (("bare-flask", "/"), ("eventsvc", path))
            for target, target_path in targets:
                # A short unmetered warm-up (template compilation, first queries) before the measured rounds.
                self.loadgen("get", [url(target, target_path)], a.page_users, count=a.page_count, duration=0.5)
            for round_ in range(a.page_rounds):
                # Alternate the order, as the registration rounds do, so drift does not always favour one side.
                for target, target_path in (targets if round_ % 2 == 0 else targets[::-1]):
                    result = self.loadgen("get", [url(target, target_path)], a.page_users, count=a.page_count,
                                          duration=a.page_duration, extra=extra, server=servers[target][1])
                    self.record("pages", backend, variant, target, result, round=round_, page_of=name,
                                page=name if target == "eventsvc" else f"bare Flask (for {name})")

    # -- checks -----------------------------------------------------------------------
    def verify(self, backend: str, database_url: str, completed: int) -> None:
        """Invariants after the burst, straight from the database with plain SQL."""
        from sqlalchemy import create_engine, text

        engine = create_engine(sqlalchemy_url(database_url))
        try:
            with engine.connect() as conn:
                q = lambda sql: conn.execute(text(sql)).scalar() or 0  # noqa: E731
                per_event = conn.execute(text("""
                    SELECT e.slug, e.capacity, e.confirmed_count,
                           (SELECT count(*) FROM registrations r WHERE r.event_id = e.id AND r.status = 'confirmed'),
                           (SELECT count(*) FROM registrations r WHERE r.event_id = e.id AND r.status = 'waitlisted')
                    FROM events e WHERE e.slug LIKE 'bench-%'""")).all()
                result = {
                    "backend": backend,
                    "events": len(per_event),
                    "registrations": q("SELECT count(*) FROM registrations"),
                    "completed_by_clients": completed,
                    "confirmed": sum(row[3] for row in per_event),
                    "waitlisted": sum(row[4] for row in per_event),
                    "overbooked_events": sum(1 for row in per_event if row[1] is not None and row[3] > row[1]),
                    "counter_mismatches": sum(1 for row in per_event if row[2] != row[3]),
                    "outbox_mismatches": q("""
                        SELECT count(*) FROM (
                            SELECT r.id FROM registrations r
                            LEFT JOIN messages m ON m.registration_id = r.id
                                 AND m.kind IN ('confirmation', 'waitlisted')
                            GROUP BY r.id HAVING count(m.id) <> 1) AS x"""),
                    "kind_mismatches": q("""
                        SELECT count(*) FROM registrations r JOIN messages m ON m.registration_id = r.id
                        WHERE m.kind IN ('confirmation', 'waitlisted')
                          AND ((r.status = 'confirmed' AND m.kind <> 'confirmation')
                            OR (r.status = 'waitlisted' AND m.kind <> 'waitlisted'))"""),
                    "full_events": sum(1 for row in per_event if row[1] is not None and row[3] == row[1]),
                }
        finally:
            engine.dispose()
        self.verifications.append(result)
        ok = not (result["overbooked_events"] or result["outbox_mismatches"] or result["kind_mismatches"]
                  or result["counter_mismatches"])
        self.say(f"{backend}: verified {result['registrations']} registrations in {result['events']} events "
                 f"({result['full_events']} full): {'OK' if ok else 'VIOLATION'} {result}")

    # -- profiling --------------------------------------------------------------------
    def profile(self, backend: str) -> None:
        a = self.args
        variant = Variant.parse("sync", a.workers)
        profdir = self.workdir / "profile"
        profdir.mkdir(exist_ok=True)
        with throwaway_database(backend, self.workdir, "prof") as db_url:
            env = app_env(db_url, self.workdir / "instance-prof", extra={**a.app_env,
                                                                        "BENCH_PROFILE_DIR": str(profdir)})
            migrate(env)
            appdata(env, "create-events", json.dumps([{"slug": "bench-profile", "capacity": a.capacity or a.count}]))
            servers = self.start_servers(variant, {"eventsvc": env}, ["eventsvc"],
                                         extra=["--config", str(ROOT / "bench" / "gunicorn_profile.py")])
            try:
                port = servers["eventsvc"][0]
                result = self.loadgen("register", [f"http://{HOST}:{port}/e/bench-profile"], 32,
                                      count=a.count, duration=a.duration, label="profile")
                self.say(f"profiled run (not comparable): {result['rate_per_s']} reg/s, errors {result['errors']}")
                result2 = self.loadgen("get", [f"http://{HOST}:{port}/e/bench-profile", f"http://{HOST}:{port}/"],
                                       32, count=a.page_count, duration=a.page_duration, label="profile")
                self.say(f"profiled pages (not comparable): {result2['rate_per_s']} req/s")
            finally:
                self.stop_servers(servers)
        files = sorted(str(p) for p in profdir.glob("worker-*.prof"))
        if not files:
            self.say("no profile written")
            return
        out = RESULTS / f"profile-{backend}.txt"
        with open(out, "w") as fh:
            stats = pstats.Stats(*files, stream=fh)
            stats.strip_dirs().sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(35)
        shutil.copy(files[0], RESULTS / f"profile-{backend}.prof")
        self.say(f"profile of the gunicorn workers: {out}")


def _describe(error: Exception) -> str:
    if isinstance(error, RuntimeError):
        return str(error)
    import traceback

    return "".join(traceback.format_exception(error)[-6:])


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return f"unreachable ({error})"  # type: ignore[return-value]


def rounds_at(a, users: int) -> int:
    """Rounds of the registration step with `users` users: the issue's target step gets at least
    --target-rounds, so its verdict does not hang on one short run on a noisy machine."""
    return max(a.rounds, a.target_rounds) if users == REGISTRATION_TARGET_USERS else a.rounds


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workloads", default="register,pages,fanout")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--servers", default="sync,gthread:4",
                   help="gunicorn variants: sync and/or gthread:N (threads per worker)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--users", default="8,32,128", help="concurrent users for the registration burst")
    p.add_argument("--rounds", type=int, default=1,
                   help="registration: measure each step this many times, alternating the order of the "
                        "targets; the table shows medians and the median of the per-round ratios")
    p.add_argument("--target-rounds", type=int, default=3,
                   help=f"registration: rounds of the step at {REGISTRATION_TARGET_USERS} users (the issue's "
                        "targets), at least --rounds")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per registration step (upper bound)")
    p.add_argument("--count", type=int, default=3000, help="registrations per step (upper bound)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per server start")
    p.add_argument("--capacity", type=int, default=None,
                   help="capacity of each burst event but the largest (default: --count × its rounds, never full)")
    p.add_argument("--race-capacity", type=int, default=100,
                   help="capacity of the event for the largest user count (fills up under the most concurrency)")
    p.add_argument("--warmup-capacity", type=int, default=20,
                   help="capacity of the warm-up event (small, so it fills up under concurrency)")
    p.add_argument("--page-users", type=int, default=32)
    p.add_argument("--page-duration", type=float, default=2.0, help="seconds per page and round (upper bound)")
    p.add_argument("--page-rounds", type=int, default=3,
                   help="public pages: rounds per page, alternating the order of app and ceiling; the verdict is "
                        "the median of the per-round ratios")
    p.add_argument("--page-count", type=int, default=50000)
    p.add_argument("--conditional", action="store_true",
                   help="public pages: clients revalidate with If-None-Match/If-Modified-Since")
    p.add_argument("--timeout", type=float, default=15.0, help="per HTTP request, seconds")
    p.add_argument("--engine", choices=("raw", "httpx"), default="raw", help="load generator client")
    p.add_argument("--fanout-n", type=int, default=10_000)
    p.add_argument("--fanout-large", action="store_true", help="also the 100,000-registrant memory run")
    p.add_argument("--fanout-large-n", type=int, default=100_000)
    p.add_argument("--fanout-large-timeout", type=float, default=1200.0,
                   help="seconds the 100,000-registrant run may deliver (worker memory is sampled all along, "
                        "so a shorter run still shows whether it grows)")
    p.add_argument("--fanout-workers", default="postgresql:1,2;sqlite:1",
                   help="worker counts per backend, e.g. 'postgresql:1,2;sqlite:1'")
    p.add_argument("--fanout-timeout", type=float, default=40.0,
                   help="seconds a delivery run may take; a run cut off there reports its rate over what "
                        "it delivered and an estimated time to the last notice (use 1200 for complete runs)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the table: cProfile the app's workers under the 32-user burst")
    p.add_argument("--profile-worker", action="store_true",
                   help="fan-out: instead of the table, cProfile one outbox worker (bench/results/profile-worker-*.txt)")
    p.add_argument("--app-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for eventsvc (e.g. OUTBOX_BATCH_SIZE=100)")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: rewrite latest.md from bench/results/latest.json")
    p.add_argument("--quick", action="store_true", help="a smoke run: 8 and 32 users, 2 s steps, sync only")
    args = p.parse_args(argv)
    if args.quick:  # smaller defaults; options given explicitly still win
        p.set_defaults(users="8,32", duration=2.0, servers="sync", page_duration=2.0, page_rounds=1, warmup=1.0, target_rounds=1,
                       fanout_n=2000, fanout_timeout=30.0)
        args = p.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - {"register", "pages", "fanout"}
    if unknown:
        p.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    args.backends = [b for b in args.backends.split(",") if b]
    args.users = [int(u) for u in str(args.users).split(",") if u]
    args.app_env = dict(kv.split("=", 1) for kv in args.app_env)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write_report(json.loads((RESULTS / "latest.json").read_text()))
        return 0
    install_sigterm_as_interrupt()
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(RESULTS / "logs", ignore_errors=True)  # server logs of this run only
    started = datetime.now(timezone.utc).astimezone()
    t0 = time.monotonic()
    info = machine_info()
    options = " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)"
    workdir = make_workdir()
    stale = drop_stale_databases() if "postgresql" in args.backends else []
    failures = []
    bench = None
    try:
        with Processes(RESULTS / "logs") as procs:
            bench = Bench(args, procs, workdir)
            bench.say(f"{info['nproc']} CPU(s) {info['cpu']}, Python {info['python']}, "
                      f"PostgreSQL {info['postgresql']}; py-spy: {info['py_spy']}")
            if stale:
                bench.say(f"dropped databases left by killed runs: {', '.join(stale)}")
            if args.profile:
                for backend in args.backends:
                    bench.profile(backend)
                return 0
            if {"register", "pages"} & set(args.workloads):
                for backend in args.backends:
                    try:
                        bench.web(backend)
                    except Exception as error:  # noqa: BLE001 - report it, run the other workloads
                        failures.append(f"{backend}: {_describe(error)}")
                        bench.say(f"{backend}: FAILED: {_describe(error)}")
            if "fanout" in args.workloads:
                from .fanout import run_fanout

                try:
                    bench.fanout = run_fanout(bench)
                except Exception as error:  # noqa: BLE001
                    failures.append(f"fan-out: {_describe(error)}")
                    bench.say(f"fan-out: FAILED: {_describe(error)}")
                    bench.fanout = {"skipped": f"failed: {str(error)[:500]}"}
    except KeyboardInterrupt:
        failures.append("interrupted")
        print("\n[bench] interrupted; every server was stopped", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if bench is None or args.profile:
        return 1 if failures else 0
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data = {"machine": info, "options": options, "started": started.strftime("%Y-%m-%d %H:%M %Z"),
            "seconds": time.monotonic() - t0, "results": bench.results, "verifications": bench.verifications,
            "page_notes": bench.page_notes, "fanout": bench.fanout, "failures": failures}
    saved = json.dumps(data, indent=1, default=str)
    (RESULTS / "latest.json").write_text(saved)
    if not failures and set(args.workloads) == {"register", "pages", "fanout"} and not args.quick:
        # A whole run is kept for bench.summary, which judges the targets by the median of several.
        commit = str(info.get("commit", "unknown")).split()
        tag = commit[0] + ("+" if len(commit) > 1 else "")  # + : the tree had uncommitted changes
        (RESULTS / "runs").mkdir(exist_ok=True)
        (RESULTS / "runs" / f"{started:%Y%m%dT%H%M%S}-{tag}.json").write_text(saved)
    write_report(data)
    return 1 if failures else 0


def write_report(data: dict) -> None:
    """Print the tables and write bench/results/latest.md (also from a saved latest.json)."""
    lines = report.machine_lines(data["machine"], data.get("started", "?"), data.get("seconds", 0), data["options"])
    lines += report.rate_limit_notes(data["results"])
    lines += report.registration_table(data["results"])
    lines += report.registration_targets(data["results"], data["verifications"])
    lines += report.verification_table(data["verifications"])
    lines += report.pages_table(data["results"], data["page_notes"])
    lines += report.fanout_table(data["fanout"])
    if data["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in data["failures"]] + [""]
    text = "\n".join(lines)
    print("\n" + text)
    (RESULTS / "latest.md").write_text(text + "\n")
    print(f"\n[bench] written to {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    sys.exit(main())
