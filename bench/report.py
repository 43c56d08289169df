"""The results as Markdown tables, with every figure next to its ceiling from the same run."""
from __future__ import annotations

from collections.abc import Callable

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


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _combine(rows: list[dict]) -> dict:
    """Several rounds of one target: medians of the figures, errors summed."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key in ("rate_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_iteration", "server_cores", "client_cpu",
                "busiest_worker_share"):
        out[key] = _median([r.get(key) for r in rows])
    errors: dict = {}
    for r in rows:
        for kind, n in r.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + n
    out["errors"], out["error_count"] = errors, sum(errors.values())
    out["completed"] = sum(r["completed"] for r in rows)
    return out


def _round_ratios(by_target: dict, a: str, b: str) -> list:
    """a's rate ÷ b's rate in the same round, for every round both were measured in, in order."""
    rounds_b = {r.get("round", 0): r for r in by_target.get(b, [])}
    return [_ratio(r["rate_per_s"], rounds_b[r.get("round", 0)]["rate_per_s"])
            for r in by_target.get(a, []) if r.get("round", 0) in rounds_b]


def _round_ratio(by_target: dict, a: str, b: str):
    """Median over rounds of a's rate ÷ b's rate in the same round."""
    return _median(_round_ratios(by_target, a, b))


def _register_groups(results: list[dict]) -> dict:
    groups: dict[tuple, dict] = {}
    for r in results:
        if r["workload"] == "register":
            groups.setdefault((r["backend"], r["server"], r["users"]), {}).setdefault(r["target"], []).append(r)
    return groups


def registration_table(results: list[dict]) -> list[str]:
    groups = _register_groups(results)
    if not groups:
        return []
    rounds = max(len(rows) for by_target in groups.values() for rows in by_target.values())
    lines = [
        "## Registration burst (GET form + POST, 303 = completed)",
        "",
        "Each app row is followed by its two ceilings, measured right next to it on the same machine. "
        "Ratio = app ÷ minimal-insert ceiling (the issue's target); vs bare = ÷ bare-Flask ceiling."
        + (" A step measured in several rounds (up to "
           f"{rounds}; the step at {REGISTRATION_TARGET_USERS} users has the most) alternates the order of the "
           "targets and shows medians, and the median of the per-round ratios." if rounds > 1 else ""),
        "",
        "| backend | server | users | target | reg/s | ratio | vs bare | p50 ms | p95 ms | p99 ms | errors "
        "| server CPU ms/reg | server cores | busiest worker | client cores |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for (backend, server, users), by_target in groups.items():
        for target in ("bare-flask", "minimal-insert", "eventsvc"):
            if target not in by_target:
                continue
            r = _combine(by_target[target])
            ratio = 1.0 if target == "minimal-insert" else _round_ratio(by_target, target, "minimal-insert")
            vs_bare = 1.0 if target == "bare-flask" else _round_ratio(by_target, target, "bare-flask")
            name = f"**{target}**" if target == "eventsvc" else target
            lines.append(
                f"| {backend} | {server} | {users} | {name} | {_f(r['rate_per_s'], 1)} | {_pct(ratio)} | "
                f"{_pct(vs_bare)} | {_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['p99_ms'], 1)} | "
                f"{_errors(r)} | {_f(r.get('cpu_ms_per_iteration'), 2)} | {_f(r.get('server_cores'), 2)} | "
                f"{_pct(r.get('busiest_worker_share'))} | {_f(r['client_cpu'], 2)} |")
    return lines + [""]


def rate_limit_notes(results: list[dict]) -> list[str]:
    limited = [r for r in results if r["target"] == "eventsvc" and any(" 429" in k for k in r.get("errors", {}))]
    if not limited:
        return []
    return ["**429 Too Many Requests from eventsvc** in " + ", ".join(
        sorted({f"{r['backend']}/{r['server']}" for r in limited})) + ": the rate limiter counted the load "
        "generator as one client. The benchmark sends a distinct `X-Forwarded-For` per person and sets "
        "`PROXY_FIX_HOPS=1`; the app must read `PROXY_FIX_HOPS` from the environment for that to take effect.", ""]


def registration_targets(results: list[dict], verifications: list[dict]) -> list[str]:
    groups = {k: v for k, v in _register_groups(results).items() if k[2] == REGISTRATION_TARGET_USERS}
    if not groups:
        return []
    lines = [
        f"### Registration targets at {REGISTRATION_TARGET_USERS} users",
        "",
        f"| backend | server | app ÷ minimal (≥ {REGISTRATION_MIN_RATIO:.0%}) | p99 (< {REGISTRATION_MAX_P99_MS} ms) "
        "| errors (0) | overbooking (0) | one outbox row each | CPU per registration: minimal ÷ app |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verified = {v["backend"]: v for v in verifications}
    for (backend, server, _users), by_target in groups.items():
        if "eventsvc" not in by_target:
            continue
        app = _combine(by_target["eventsvc"])
        minimal = _combine(by_target["minimal-insert"]) if "minimal-insert" in by_target else None
        ratio = _round_ratio(by_target, "eventsvc", "minimal-insert")
        cost = _ratio(minimal and minimal.get("cpu_ms_per_iteration"), app.get("cpu_ms_per_iteration"))
        v = verified.get(backend)
        over = "–" if v is None else ("0 ✔" if v["overbooked_events"] == 0 else f"{v['overbooked_events']} ✘")
        outbox = "–" if v is None else ("✔" if v["outbox_mismatches"] == 0 else f"{v['outbox_mismatches']} ✘")
        lines.append(
            f"| {backend} | {server} | {_pct(ratio)} {_mark(ratio is not None and ratio >= REGISTRATION_MIN_RATIO)} | "
            f"{_f(app['p99_ms'], 1)} ms {_mark(app['p99_ms'] is not None and app['p99_ms'] < REGISTRATION_MAX_P99_MS)} | "
            f"{app['error_count']} {_mark(app['error_count'] == 0)} | {over} | {outbox} | {_pct(cost)} |")
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


def _page_groups(results: list[dict]) -> dict:
    """Page rows by (backend, server, page): {target: [rows, one per round]}, in the order measured.
    (A result of an earlier version has no `page_of`: its ceiling row was named "bare Flask (before <page>)"
    and measured once, right before its page.)"""
    groups: dict[tuple, dict] = {}
    for r in results:
        if r["workload"] != "pages":
            continue
        page = r.get("page_of") or r["page"].removeprefix("bare Flask (before ").removesuffix(")")
        groups.setdefault((r["backend"], r["server"], page), {}).setdefault(r["target"], []).append(r)
    return groups


def pages_table(results: list[dict], notes: list[str]) -> list[str]:
    groups = _page_groups(results)
    if not groups and not notes:
        return []
    rounds = max((len(rows) for by_target in groups.values() for rows in by_target.values()), default=1)
    lines = [
        "## Public pages (GET, 32 clients)",
        "",
        f"Ratio = page ÷ bare-Flask ceiling measured right next to it (target ≥ {PAGES_MIN_RATIO:.0%})."
        + (f" Each page is measured in {rounds} rounds that alternate the order of page and ceiling; the rows "
           "show medians, the ratio is the median of the per-round ratios, and `rounds` lists them in order."
           if rounds > 1 else ""),
        "",
        "| backend | server | page | req/s | ratio | rounds | p50 ms | p95 ms | p99 ms | bytes | errors "
        "| server CPU ms/req | server cores | busiest worker | client cores |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for (backend, server, page), by_target in groups.items():
        for target in ("bare-flask", "eventsvc"):
            if target not in by_target:
                continue
            r = _combine(by_target[target])
            if target == "bare-flask":
                ratio, name, mark, per_round = 1.0, f"bare Flask (for {page})", "", ""
            else:
                ratio, name = _round_ratio(by_target, "eventsvc", "bare-flask"), page
                mark = "" if ratio is None else " " + _mark(ratio >= PAGES_MIN_RATIO)
                per_round = " ".join(_pct(x) for x in _round_ratios(by_target, "eventsvc", "bare-flask"))
            lines.append(
                f"| {backend} | {server} | {name} | {_f(r['rate_per_s'], 1)} | {_pct(ratio)}{mark} | {per_round} | "
                f"{_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['p99_ms'], 1)} | "
                f"{_f(r['bytes_per_iteration'])} | {_errors(r)} | {_f(r.get('cpu_ms_per_iteration'), 2)} | "
                f"{_f(r.get('server_cores'), 2)} | {_pct(r.get('busiest_worker_share'))} | {_f(r['client_cpu'], 2)} |")
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
        "time to last s | worker peak RSS MB | duplicate recipients | duplicate Message-IDs (malformed) | "
        "left unsent | invite in mail |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in fanout.get("runs", []):
        ratio = _ratio(r.get("rate_per_s"), r.get("ceiling_rate_per_s"))
        lines.append(
            f"| {r['backend']} | {r['registrants']:,} | {r['workers']} | "
            f"{_f(r.get('reschedule_s'), 2)} {_mark((r.get('reschedule_s') or 99) < FANOUT_MAX_COMMIT_S) if r['registrants'] <= 10_000 else ''} | "
            f"{_f(r.get('queued'))} | {_f(r.get('delivered'))} | {_f(r.get('rate_per_s'), 1)} | "
            f"{_f(r.get('ceiling_rate_per_s'), 1)} | {_pct(ratio)} | {_time_to_last(r)} | "
            f"{_f(r.get('peak_rss_mb'), 1)} {_mark((r.get('peak_rss_mb') or 1e9) < FANOUT_MAX_RSS_MB)} | "
            f"{_f(r.get('duplicate_recipients'))} {_mark(r.get('duplicate_recipients') == 0)} | "
            f"{_f(r.get('duplicates'))} {_mark(r.get('duplicates') == 0)} ({_f(r.get('malformed_message_ids'))}) | "
            f"{r.get('left', '–')} | "
            f"{r.get('invite', '–')} |")
    lines.append("")
    examples = {r.get("malformed_example") for r in fanout.get("runs", []) if r.get("malformed_example")}
    for example in sorted(examples):
        lines.append(f"- malformed Message-ID as received by the sink: `{example}` (every such notice carries the "
                     "same broken ID, so duplicate Message-IDs count them; duplicate recipients counts real repeats)")
    lines += [f"- {n}" for n in fanout.get("notes", [])]
    return lines + [""]


def _time_to_last(r) -> str:
    if r.get("time_to_last_s") is not None:
        return _f(r["time_to_last_s"], 1)
    if r.get("time_to_last_estimate_s") is not None:
        return f"~{r['time_to_last_estimate_s']:,.0f} (est.)"
    return "–"


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
        "- load generator: `bench/loadgen.py` (raw asyncio HTTP/1.1 client) in its own process on the same "
        "machine; `client cores` is its CPU use, `server cores` that of the gunicorn process tree (the database "
        "server's own CPU is in neither). `server CPU ms/reg` = gunicorn CPU time ÷ completed registrations: "
        "the cost per registration, which drifts less than throughput on a shared machine. `busiest worker` = "
        "the share of the gunicorn workers' CPU that the busiest one used: 50% with 2 workers is an even spread; "
        "near 100% means one worker took (nearly) all the connections.",
        "",
    ]


# ------------------------------------------------------------- verdicts, one run and across runs

def verdicts(data: dict) -> dict[str, tuple[float, bool, str]]:
    """Every figure the issue sets a target for, from one run: name → (value, met, unit).
    Ratios are fractions; the median over runs of each is what bench.summary shows."""
    return {name: (value, met(value), unit) for name, (value, met, unit) in _targets(data).items()}


def _at_least(limit):
    return lambda value: value >= limit


def _below(limit):
    return lambda value: value < limit


def _none(value) -> bool:
    return value == 0


def _targets(data: dict) -> dict[str, tuple[float, Callable[[float], bool], str]]:
    """name → (value, its target as a test, unit): one place for every threshold, applied to one
    run's figure and to the median over several alike."""
    out: dict[str, tuple[float, Callable[[float], bool], str]] = {}
    for (backend, server, users), by_target in _register_groups(data["results"]).items():
        if users != REGISTRATION_TARGET_USERS or "eventsvc" not in by_target:
            continue
        app = _combine(by_target["eventsvc"])
        ratio = _round_ratio(by_target, "eventsvc", "minimal-insert")
        cell = f"registration {backend} {server}"
        if ratio is not None:
            out[f"{cell}: ÷ minimal-insert"] = (ratio, _at_least(REGISTRATION_MIN_RATIO), "ratio")
        if app["p99_ms"] is not None:
            out[f"{cell}: p99"] = (app["p99_ms"], _below(REGISTRATION_MAX_P99_MS), "ms")
        out[f"{cell}: errors"] = (app["error_count"], _none, "")
    for v in data.get("verifications", []):
        bad = v["overbooked_events"] + v["counter_mismatches"] + v["outbox_mismatches"] + v["kind_mismatches"]
        out[f"registration {v['backend']}: overbooking and outbox mismatches"] = (bad, _none, "")
    for (backend, server, page), by_target in _page_groups(data["results"]).items():
        ratio = _round_ratio(by_target, "eventsvc", "bare-flask")
        if ratio is not None and not page.startswith("stack floor"):  # the floor is shown, not a target
            out[f"page {backend} {server} {page}: ÷ bare Flask"] = (ratio, _at_least(PAGES_MIN_RATIO), "ratio")
    fanout = data.get("fanout") or {}
    for r in fanout.get("runs", []):
        cell = f"fan-out {r['backend']} {r['registrants']:,} × {r['workers']} worker(s)"
        if r["registrants"] <= 10_000 and r.get("reschedule_s") is not None:
            out[f"{cell}: reschedule"] = (r["reschedule_s"], _below(FANOUT_MAX_COMMIT_S), "s")
        ratio = _ratio(r.get("rate_per_s"), r.get("ceiling_rate_per_s"))
        if ratio is not None and r["backend"] == "postgresql" and r["workers"] == 2:
            out[f"{cell}: ÷ smtplib"] = (ratio, _at_least(FANOUT_MIN_RATIO), "ratio")
        if r.get("peak_rss_mb") is not None:
            out[f"{cell}: worker peak RSS"] = (r["peak_rss_mb"], _below(FANOUT_MAX_RSS_MB), "MB")
        dupes = (r.get("duplicate_recipients") or 0) + (r.get("duplicates") or 0)
        out[f"{cell}: duplicates"] = (dupes, _none, "")
    return out


def _value(value: float, unit: str) -> str:
    if unit == "ratio":  # one decimal: a verdict at 49.6% must not read "50% ✘"
        return f"{value * 100:.1f}%"
    return f"{value:,.0f} {unit}".strip() if unit in ("ms", "MB", "") else f"{value:,.2f} {unit}"


def summary_lines(runs: list[tuple[str, dict]]) -> list[str]:
    """One row per target: its figure in each run, the median over the runs, and the verdict on the
    median. A cell near its line moves by about ±10 points between runs on a shared machine; the
    median of several runs is the figure to judge."""
    per_run = [_targets(data) for _name, data in runs]
    names = list(dict.fromkeys(name for v in per_run for name in v))
    lines = [
        f"# eventsvc benchmark: {len(runs)} run{'s' if len(runs) != 1 else ''}",
        "",
        *[f"- run {i + 1}: {name}, commit {data['machine'].get('commit', '?')}, started "
          f"{data.get('started', '?')}, load average {data['machine'].get('loadavg')}"
          for i, (name, data) in enumerate(runs)],
        "",
        "| target | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median | runs met |",
        "|---|" + "---:|" * len(runs) + "---:|---:|",
    ]
    met_all = 0
    for name in names:
        values = [v.get(name) for v in per_run]
        present = [v for v in values if v is not None]
        _, met, unit = present[0]
        median = _median([value for value, _met, _unit in present])
        ok = met(median)
        met_all += ok
        cells = [("–" if v is None else _value(v[0], unit) + ("" if met(v[0]) else " ✘")) for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_value(median, unit)} {_mark(ok)} | "
                     f"{sum(met(value) for value, _met, _unit in present)}/{len(present)} |")
    lines += ["", f"Targets met by the median over the runs: {met_all} of {len(names)}.", ""]
    return lines

