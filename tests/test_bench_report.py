"""The benchmark's verdicts: per-round ratios, medians over rounds and over runs (bench/report.py)."""
from bench import report


def _row(workload, backend, server, target, rate, *, round_=0, users=32, p99=100.0, **extra):
    return dict(workload=workload, backend=backend, server=server, target=target, users=users, round=round_,
                rate_per_s=rate, p50_ms=p99 / 2, p95_ms=p99, p99_ms=p99, error_count=0, errors={},
                completed=int(rate), client_cpu=0.5, bytes_per_iteration=5000, **extra)


def _page(target, rate, round_, page="event page"):
    return _row("pages", "sqlite", "2w sync", target, rate, round_=round_, page_of=page,
                page=page if target == "eventsvc" else f"bare Flask (for {page})")


def _run(page_rates, register_rates=(100, 200)):
    results = [_row("register", "sqlite", "2w sync", "minimal-insert", register_rates[1]),
               _row("register", "sqlite", "2w sync", "eventsvc", register_rates[0], p99=300.0)]
    for round_, (app, bare) in enumerate(page_rates):
        results += [_page("bare-flask", bare, round_), _page("eventsvc", app, round_)]
    return {"machine": {"commit": "abc1234", "loadavg": "1 1 1"}, "started": "today", "results": results,
            "verifications": [], "fanout": None}


def test_a_page_is_judged_by_the_median_of_its_per_round_ratios():
    # Rounds at 40%, 60% and 55%: the median round (55%) meets the target, whatever the mean rates say.
    data = _run([(400, 1000), (600, 1000), (550, 1000)])
    value, met, unit = report.verdicts(data)["page sqlite 2w sync event page: ÷ bare Flask"]
    assert (round(value, 2), met, unit) == (0.55, True, "ratio")
    table = "\n".join(report.pages_table(data["results"], []))
    assert "| 55% ✔ | 40% 60% 55% |" in table


def test_a_result_of_the_single_round_format_still_renders():
    old = [dict(_row("pages", "sqlite", "2w sync", "bare-flask", 1000), page="bare Flask (before event page)"),
           dict(_row("pages", "sqlite", "2w sync", "eventsvc", 450), page="event page")]
    for row in old:
        del row["round"]
    assert "| 45% ✘ |" in "\n".join(report.pages_table(old, []))


def test_the_summary_judges_each_target_by_its_median_over_runs():
    runs = [("a.json", _run([(450, 1000)], (90, 200))), ("b.json", _run([(560, 1000)], (120, 200))),
            ("c.json", _run([(520, 1000)], (110, 200)))]
    lines = report.summary_lines(runs)
    page = next(line for line in lines if line.startswith("| page sqlite 2w sync event page"))
    assert page == "| page sqlite 2w sync event page: ÷ bare Flask | 45.0% ✘ | 56.0% | 52.0% | 52.0% ✔ | 2/3 |"
    ratio = next(line for line in lines if "registration sqlite 2w sync: ÷ minimal-insert" in line)
    assert ratio.endswith("| 55.0% ✔ | 2/3 |")  # 45%, 60%, 55%
    p99 = next(line for line in lines if "registration sqlite 2w sync: p99" in line)
    assert p99.endswith("| 300 ms ✘ | 0/3 |")
    assert any(line.startswith("Targets met by the median over the runs: 3 of 4.") for line in lines)
