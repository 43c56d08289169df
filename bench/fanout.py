"""Reschedule fan-out: one reschedule, N notices, delivered by 1 or 2 workers.

Per backend and worker count, in a throw-away database:
1. an online event with N confirmed registrants, bulk-created with executemany
   (`bench.appdata bulk-registrations`, each with an already-sent confirmation);
2. `eventsvc.events.services.reschedule_event()` timed until it returns
   (it commits: one "rescheduled" notice per registrant, one transaction);
3. a counting aiosmtpd sink process (`bench.smtp_sink`), then W processes of
   `flask --app wsgi worker` delivering to it; polled until the sink has
   accepted every queued notice (bounded by --fanout-timeout). Reported:
   notices/s (first to last accepted), time from launching the workers to the
   last notice, the workers' peak RSS (VmHWM from /proc), duplicates (the same
   Message-ID accepted twice), and what the outbox still holds afterwards;
4. the ceiling, right after, in the same sink set-up: a plain smtplib loop over
   one connection sending as many messages of the same mean size.

`--fanout-large` adds an N=100,000 run (2 workers on PostgreSQL) for memory:
the workers' RSS is sampled while they work and must not grow with N.

Needs `reschedule_event` and the `worker` CLI command; when either is missing
the workload reports "skipped: worker not available yet".
"""
from __future__ import annotations

import json
import os
import smtplib
import subprocess
import time
import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from .common import FLASK, PYTHON, app_env, appdata, migrate, sqlalchemy_url, throwaway_database
from .procs import HOST, ROOT, free_port, peak_rss_kib


def worker_available(env: dict) -> tuple[bool, str]:
    service = appdata(env, "has-reschedule", timeout=120)
    if not service.get("available"):
        return False, service.get("why", "eventsvc.events.services.reschedule_event does not exist")
    where = service.get("where", "")
    note = "" if where.startswith("eventsvc.events.services.") else f"note: reschedule service found as {where}"
    try:
        done = subprocess.run([*FLASK, "worker", "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "`flask --app wsgi worker --help` did not answer within 120 s"
    if done.returncode != 0:
        return False, "`flask --app wsgi worker` does not exist"
    if "--once" not in done.stdout:
        note = "; ".join(filter(None, [note, "note: `worker --once` is not offered (the continuous worker is used)"]))
    return True, note


def parse_workers(spec: str, backends) -> dict[str, list[int]]:
    """'postgresql:1,2;sqlite:1' → worker counts per backend; a bare '1,2' means every backend."""
    plan = {}
    for part in filter(None, spec.split(";")):
        backend, colon, counts = part.rpartition(":")
        names = [backend.strip()] if colon else list(backends)
        for name in names:
            if name not in ("sqlite", "postgresql"):
                raise ValueError(f"--fanout-workers: unknown backend {name!r} in {spec!r}")
            plan[name] = [int(c) for c in counts.split(",") if c.strip()]
    return plan


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def start_sink(bench, label: str):
    port = free_port()
    stats = bench.workdir / f"sink-{label}-{port}.json"
    sample = bench.workdir / f"sink-{label}-{port}.eml"
    proc = bench.procs.start(f"sink-{label}-{port}", [PYTHON, "-m", "bench.smtp_sink", "--port", str(port),
                                                    "--stats", str(stats), "--sample", str(sample)],
                             dict(os.environ, PYTHONPATH=str(ROOT)))
    proc.wait_for_port(port, timeout=30)
    deadline = time.monotonic() + 10
    while not stats.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return port, proc, stats, sample


def smtplib_ceiling(bench, count: int, size: int, timeout: float) -> dict:
    """A plain smtplib loop: `count` messages of `size` bytes over one connection, to a fresh sink."""
    port, proc, stats_path, _sample = start_sink(bench, "ceiling")
    try:
        filler = ("Dit is een benchmarkbericht met ongeveer dezelfde grootte als een uitnodiging. " * 2 + "\n")
        t0 = time.time()
        deadline = time.monotonic() + timeout
        sent = 0
        with smtplib.SMTP(HOST, port, timeout=30) as smtp:
            for i in range(count):
                if time.monotonic() >= deadline:
                    break
                msg = EmailMessage()
                msg["From"] = "eventsvc <noreply@bench.example.org>"
                msg["To"] = f"deelnemer{i}@bench.example.org"
                msg["Subject"] = "Gewijzigd: Benchmarkbijeenkomst"
                msg["Message-ID"] = make_msgid(domain="bench.example.org")
                head = len(bytes(msg))
                msg.set_content((filler * (max(size - head, 200) // len(filler) + 1))[:max(size - head - 60, 100)])
                smtp.send_message(msg)
                sent += 1
        wait_until = time.monotonic() + 10
        while read_stats(stats_path).get("count", 0) < sent and time.monotonic() < wait_until:
            time.sleep(0.05)
    finally:
        bench.procs.stop(proc)
    stats = read_stats(stats_path)
    first, last = stats.get("first") or t0, stats.get("last") or t0
    return {"sent": sent, "accepted": stats.get("count", 0), "mean_size": stats.get("mean_size"),
            "seconds": round(last - t0, 3),
            "rate_per_s": round((stats.get("count", 0)) / max(last - t0, 1e-9), 1),
            "steady_rate_per_s": round((stats.get("count", 1) - 1) / max(last - first, 1e-9), 1)}


def delivery_run(bench, backend: str, db_url: str, env: dict, *, n: int, workers: int, timeout: float,
                 profile: Path | None = None) -> dict:
    slug = f"bench-fanout-{n}-{workers}w-{uuid.uuid4().hex[:4]}"
    appdata(env, "create-events", json.dumps([{"slug": slug, "capacity": None}]))
    bulk = appdata(env, "bulk-registrations", slug, str(n), timeout=900)
    bench.say(f"  {backend}: {n:,} registrants bulk-created in {bulk['seconds']} s")
    resched = appdata(env, "reschedule", slug, timeout=600)
    bench.say(f"  {backend}: reschedule_event() returned after {resched['seconds']} s, "
              f"{resched['rescheduled_rows']} 'rescheduled' rows queued ({resched['pending_rows']} pending)")
    expected = resched["rescheduled_rows"]
    row = {"backend": backend, "registrants": n, "workers": workers, "reschedule_s": resched["seconds"],
           "queued": expected, "bulk_s": bulk["seconds"]}

    port, sink, stats_path, sample = start_sink(bench, f"{backend}-{workers}w")
    worker_env = dict(env, MAIL_PORT=str(port))
    procs, rss_samples, peak_kib = [], [], {}
    try:
        launched = time.time()
        for i in range(workers):
            argv = [*FLASK, "worker"]
            if profile is not None:  # cProfile writes its file when the worker exits on SIGTERM
                argv = [PYTHON, "-m", "cProfile", "-o", str(profile), *FLASK[1:], "worker"]
            procs.append(bench.procs.start(f"worker-{backend}-{n}-{i + 1}of{workers}", argv, worker_env))
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            count = read_stats(stats_path).get("count", 0)
            for p in procs:
                hwm, rss = peak_rss_kib(p.pid)
                if hwm:
                    peak_kib[p.pid] = max(peak_kib.get(p.pid, 0), hwm)
                if rss:
                    rss_samples.append((count, rss))
            if count >= expected:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            if not any(p.alive() for p in procs):
                row["note"] = "every worker exited: " + procs[0].tail(10)
                break
            if time.monotonic() - last_change > 60:
                row["note"] = f"no progress for 60 s at {count}"
                break
        else:
            row["note"] = f"incomplete after {timeout:.0f} s"
        for p in procs:  # VmHWM before they exit
            hwm, _ = peak_rss_kib(p.pid)
            if hwm:
                peak_kib[p.pid] = max(peak_kib.get(p.pid, 0), hwm)
    finally:
        for p in procs:
            bench.procs.stop(p, grace=15)
        time.sleep(0.3)
        bench.procs.stop(sink)
    stats = read_stats(stats_path)
    delivered = stats.get("count", 0)
    first, last = stats.get("first"), stats.get("last")
    row.update(
        delivered=delivered, duplicates=stats.get("duplicates"), mean_size=stats.get("mean_size"),
        without_message_id=stats.get("without_message_id"),
        duplicate_recipients=stats.get("duplicate_recipients"),
        malformed_message_ids=stats.get("malformed_message_ids"), malformed_example=stats.get("malformed_example"),
        rate_per_s=round((delivered - 1) / (last - first), 1) if delivered > 1 and last > first else None,
        time_to_last_s=round(last - launched, 2) if last and delivered >= expected else None,
        peak_rss_mb=round(max(peak_kib.values()) / 1024, 1) if peak_kib else None,
        rss_curve=_curve(rss_samples, delivered),
    )
    if delivered < expected and row["rate_per_s"]:
        # Bounded run: how long the rest would have taken at the measured rate.
        row["time_to_last_estimate_s"] = round((last - launched) + (expected - delivered) / row["rate_per_s"], 1)
    body = sample.read_bytes() if sample.exists() else b""
    row["invite"] = "yes" if b"text/calendar" in body and b"invite.ics" in body else ("no" if body else "–")
    row["left"] = outbox_left(db_url, slug)
    if delivered and row.get("mean_size") and profile is None:
        ceiling = smtplib_ceiling(bench, delivered, row["mean_size"], timeout=timeout)
        row["ceiling"] = ceiling
        row["ceiling_rate_per_s"] = ceiling["steady_rate_per_s"]
    bench.say(f"  {backend} {workers} worker(s): {delivered}/{expected} delivered, {row.get('rate_per_s')} /s "
              f"(ceiling {row.get('ceiling_rate_per_s')} /s), peak RSS {row.get('peak_rss_mb')} MB, "
              f"duplicate Message-IDs {row.get('duplicates')} (malformed {row.get('malformed_message_ids')}, e.g. "
              f"{row.get('malformed_example')}), duplicate recipients {row.get('duplicate_recipients')}, "
              f"left {row['left']}" + (f"; {row['note']}" if 'note' in row else ""))
    return row


def _curve(samples: list[tuple[int, int]], expected: int) -> str:
    """RSS (MB, one worker) at ~10/50/100 % of what was delivered: flat means it does not grow with N."""
    if not samples or not expected:
        return ""
    points = []
    for share in (0.1, 0.5, 1.0):
        wanted = share * expected
        at = next((rss for count, rss in samples if count >= wanted), samples[-1][1])
        points.append(f"{share:.0%}: {at / 1024:.0f}")
    return ", ".join(points)


def outbox_left(db_url: str, slug: str) -> str:
    """What the event's notices (other than the bulk-created confirmations) are left as, besides sent."""
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlalchemy_url(db_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT m.kind, m.status, m.send_after <= CURRENT_TIMESTAMP, count(*) FROM messages m "
                "JOIN events e ON e.id = m.event_id WHERE e.slug = :slug AND m.kind <> 'confirmation' "
                "AND m.status <> 'sent' GROUP BY m.kind, m.status, m.send_after <= CURRENT_TIMESTAMP"),
                {"slug": slug}).all()
    finally:
        engine.dispose()
    parts = [f"{kind} {status}{'' if due else ' (later)'} {n}" for kind, status, due, n in rows]
    return ", ".join(sorted(parts)) or "none"


def profile_worker(bench, backend: str, db_url: str, env: dict) -> None:
    """One worker under cProfile (not in the table): where a notice's time goes."""
    import pstats

    from .run import RESULTS

    prof = bench.workdir / f"worker-{backend}.prof"
    n = min(bench.args.fanout_n, 2000)
    bench.say(f"  profiling one worker delivering {n} notices on {backend} (not in the table)")
    delivery_run(bench, backend, db_url, env, n=n, workers=1, timeout=bench.args.fanout_timeout, profile=prof)
    if not prof.exists():
        bench.say("  no worker profile was written")
        return
    out = RESULTS / f"profile-worker-{backend}.txt"
    with open(out, "w") as fh:
        stats = pstats.Stats(str(prof), stream=fh)
        stats.strip_dirs().sort_stats("cumulative").print_stats(50)
        stats.sort_stats("tottime").print_stats(30)
    bench.say(f"  worker profile: {out}")


def run_fanout(bench) -> dict:
    a = bench.args
    plan = parse_workers(a.fanout_workers, a.backends)
    result = {"runs": [], "notes": []}
    runs = []  # (backend, registrants, workers, timeout)
    for backend in a.backends:
        runs += [(backend, a.fanout_n, w, a.fanout_timeout) for w in plan.get(backend, [])]
        if a.fanout_large and backend == "postgresql" and plan.get(backend):
            runs.append((backend, a.fanout_large_n, max(plan[backend]), a.fanout_large_timeout))
    if a.profile_worker:
        runs = [(backend, a.fanout_n, 1, a.fanout_timeout) for backend in a.backends if plan.get(backend)]
    if not runs:
        raise ValueError(f"--fanout-workers {a.fanout_workers!r} plans no run on {', '.join(a.backends)}")
    checked = False
    for backend, n, workers, timeout in runs:
        # A fresh database per run, so a run cut off by its time bound leaves nothing for the next one.
        with throwaway_database(backend, bench.workdir, "fanout") as db_url:
            env = app_env(db_url, bench.workdir / f"instance-fanout-{backend}", extra=a.app_env)
            migrate(env)
            if not checked:
                available, why = worker_available(env)
                if not available:
                    bench.say(f"fan-out: skipped: worker not available yet ({why})")
                    return {"skipped": f"worker not available yet ({why})"}
                if why:
                    result["notes"].append(why)
                checked = True
            bench.say(f"fan-out on {backend}: {n:,} registrants, {workers} worker(s)")
            if a.profile_worker:
                profile_worker(bench, backend, db_url, env)
                continue
            result["runs"].append(delivery_run(bench, backend, db_url, env, n=n, workers=workers, timeout=timeout))
    for run in result["runs"]:
        if run.get("rss_curve"):
            result["notes"].append(f"{run['backend']} {run['registrants']:,}/{run['workers']}w worker RSS MB "
                                   f"at share delivered: {run['rss_curve']}")
        if run.get("note"):
            result["notes"].append(f"{run['backend']} {run['registrants']:,}/{run['workers']}w: {run['note']}")
    if not a.fanout_large:
        result["notes"].append("the 100,000-registrant memory run is off by default: --fanout-large")
    return result
