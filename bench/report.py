"""The results as Markdown tables, with every figure next to its ceiling from the same run."""
from __future__ import annotations

REGISTRATION_TARGET_USERS = 32
REGISTRATION_MIN_RATIO = 0.5
REGISTRATION_MAX_P99_MS = 250
PAGES_MIN_RATIO = 0.5
FANOUT_MAX_COMMIT_S = 2.0
FANOUT_MIN_RATIO = 0.5
FANOUT_MAX_RSS_MB = 150


def _f(value, digits=0, suffix=""):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _ratio(a, b):
    if a is None or not b:
        return None
    return a / b


def _pct(r):
    return "–" if r is None else f"{r * 100:.0f}%"


def _errors(result):
    if result is None:
        return "–"
    if not result.get("error_count"):
        return "0"
    return f"{result['error_count']} (" + ", ".join(f"{k}: {v}" for k, v in result["errors"].items()) + ")"


def registration_table(results: list[dict]) -> list[str]:
    rows = [r for r in results if r["workload"] == "register"]
    if not rows:
        return []
    lines = [
        "## Registration burst (GET form + POST, 303 = completed)",
        "",
        "Each app row is followed by its two ceilings, measured just before it on the same machine. "
        "Ratio = app ÷ minimal-insert ceiling (the issue's target); bare = app ÷ bare-Flask ceiling.",
        "",
        "| backend | server | users | target | reg/s | ratio | vs bare | p50 ms | p95 ms | p99 ms | errors | client CPU |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["server"], r["users"]), {})[r["target"]] = r
    for (backend, server, users), by_target in groups.items():
        minimal, bare = by_target.get("minimal-insert"), by_target.get("bare-flask")
        for target in ("bare-flask", "minimal-insert", "eventsvc"):
            r = by_target.get(target)
            if r is None:
                continue
            ratio = _ratio(r["rate_per_s"], minimal and minimal["rate_per_s"])
            vs_bare = _ratio(r["rate_per_s"], bare and bare["rate_per_s"])
            name = f"**{target}**" if target == "eventsvc" else target
            lines.append(
                f"| {backend} | {server} | {users} | {name} | {_f(r['rate_per_s'], 1)} | "
                f"{_pct(ratio) if target != 'minimal-insert' else '100%'} | {_pct(vs_bare) if target != 'bare-flask' else '100%'} | "
                f"{_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['p99_ms'], 1)} | {_errors(r)} | "
                f"{_f(r['client_cpu'], 2)} |")
    return lines + [""]


def registration_targets(results: list[dict], verifications: list[dict]) -> list[str]:
    rows = [r for r in results if r["workload"] == "register" and r["users"] == REGISTRATION_TARGET_USERS]
    if not rows:
        return []
    lines = [
        f"### Registration targets at {REGISTRATION_TARGET_USERS} users",
        "",
        f"| backend | server | app ÷ minimal (≥ {REGISTRATION_MIN_RATIO:.0%}) | p99 (< {REGISTRATION_MAX_P99_MS} ms) "
        "| errors (0) | overbooking (0) | one outbox row each |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["backend"], r["server"]), {})[r["target"]] = r
    verified = {v["backend"]: v for v in verifications}
    for (backend, server), by_target in groups.items():
        app, minimal = by_target.get("eventsvc"), by_target.get("minimal-insert")
        if app is None:
            continue
        ratio = _ratio(app["rate_per_s"], minimal and minimal["rate_per_s"])
        v = verified.get(backend)
        over = "–" if v is None else ("0 ✔" if v["overbooked_events"] == 0 else f"{v['overbooked_events']} ✘")
        outbox = "–" if v is None else ("✔" if v["outbox_mismatches"] == 0 else f"{v['outbox_mismatches']} ✘")
        lines.append(
            f"| {backend} | {server} | {_pct(ratio)} {_mark(ratio is not None and ratio >= REGISTRATION_MIN_RATIO)} | "
            f"{_f(app['p99_ms'], 1)} ms {_mark(app['p99_ms'] is not None and app['p99_ms'] < REGISTRATION_MAX_P99_MS)} | "
            f"{app['error_count']} {_mark(app['error_count'] == 0)} | {over} | {outbox} |")
    return lines + [""]


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def verification_table(verifications: list[dict]) -> list[str]:
    if not verifications:
        return []
    lines = [
        "### Checked in the database after the burst",
        "",
        "| backend | events | registrations | 303s seen by clients | confirmed | waitlisted | "
        "events over capacity | seat counter ≠ confirmed rows | registrations without exactly one confirmation/waitlist row | kind ≠ status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in verifications:
        lines.append(
            f"| {v['backend']} | {v['events']} | {v['registrations']} | {v['completed_by_clients']} | {v['confirmed']} | "
            f"{v['waitlisted']} | {v['overbooked_events']} | {v['counter_mismatches']} | {v['outbox_mismatches']} | "
            f"{v['kind_mismatches']} |")
    return lines + [""]


def pages_table(results: list[dict], notes: list[str]) -> list[str]:
    rows = [r for r in results if r["workload"] == "pages"]
    if not rows and not notes:
        return []
    lines = [
        "## Public pages (GET, 32 clients)",
        "",
        f"Ratio = page ÷ bare-Flask ceiling measured just before it (target ≥ {PAGES_MIN_RATIO:.0%}).",
        "",
        "| backend | server | page | req/s | ratio | p50 ms | p95 ms | p99 ms | bytes | errors | client CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    bare = {}
    for r in rows:
        if r["target"] == "bare-flask":
            bare[(r["backend"], r["server"])] = r
    for r in rows:
        ceiling = bare.get((r["backend"], r["server"]))
        ratio = 1.0 if r["target"] == "bare-flask" else _ratio(r["rate_per_s"], ceiling and ceiling["rate_per_s"])
        mark = "" if r["target"] == "bare-flask" or ratio is None else " " + _mark(ratio >= PAGES_MIN_RATIO)
        lines.append(
            f"| {r['backend']} | {r['server']} | {r['page']} | {_f(r['rate_per_s'], 1)} | {_pct(ratio)}{mark} | "
            f"{_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['p99_ms'], 1)} | "
            f"{_f(r['bytes_per_iteration'])} | {_errors(r)} | {_f(r['client_cpu'], 2)} |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return lines + ([""] if notes else [])


def fanout_table(fanout: dict | None) -> list[str]:
    if fanout is None:
        return []
    lines = ["## Reschedule fan-out", ""]
    if fanout.get("skipped"):
        return lines + [f"skipped: {fanout['skipped']}", ""]
    lines += [
        "Reschedule = `reschedule_event()` until it returned (committed). Delivery rate from the first to the last "
        "message accepted by the counting sink; ratio = workers ÷ smtplib ceiling (one connection, same count, "
        "same mean size, same sink) measured right after.",
        "",
        "| backend | registrants | workers | reschedule s | queued | delivered | notices/s | ceiling/s | ratio | "
        "time to last s | worker peak RSS MB | duplicates | left pending/failed | invite in mail |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in fanout.get("runs", []):
        ratio = _ratio(r.get("rate_per_s"), r.get("ceiling_rate_per_s"))
        lines.append(
            f"| {r['backend']} | {r['registrants']:,} | {r['workers']} | "
            f"{_f(r.get('reschedule_s'), 2)} {_mark((r.get('reschedule_s') or 99) < FANOUT_MAX_COMMIT_S) if r['registrants'] <= 10_000 else ''} | "
            f"{_f(r.get('queued'))} | {_f(r.get('delivered'))} | {_f(r.get('rate_per_s'), 1)} | "
            f"{_f(r.get('ceiling_rate_per_s'), 1)} | {_pct(ratio)} | {_f(r.get('time_to_last_s'), 1)} | "
            f"{_f(r.get('peak_rss_mb'), 1)} {_mark((r.get('peak_rss_mb') or 1e9) < FANOUT_MAX_RSS_MB)} | "
            f"{_f(r.get('duplicates'))} {_mark(r.get('duplicates') == 0)} | {r.get('left', '–')} | "
            f"{r.get('invite', '–')} |")
    lines.append("")
    lines += [f"- {n}" for n in fanout.get("notes", [])]
    return lines + [""]


def machine_lines(info: dict, started: str, seconds: float, options: str) -> list[str]:
    return [
        "# eventsvc benchmark",
        "",
        f"- when: {started}, took {seconds:.0f} s; options: `{options}`",
        f"- machine: {info.get('nproc')} CPU(s), {info.get('cpu')}; {info.get('platform')}",
        f"- Python {info.get('python')}; SQLite {info.get('sqlite')}; PostgreSQL {info.get('postgresql')}",
        f"- {info.get('versions', '')}",
        f"- commit {info.get('commit', '?')}; load average at start {info.get('loadavg')}, "
        f"at end {info.get('loadavg_end', '?')}",
        "- load generator: `bench/loadgen.py` in its own process on the same machine (its CPU use is the "
        "`client CPU` column, in cores; the servers get what is left of the 2 cores)",
        "",
    ]
