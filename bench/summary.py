"""The issue's targets over several `make bench` runs: each run's figure and the median.

    python -m bench.summary                 # the runs of the newest commit in bench/results/runs/
    python -m bench.summary --last 3        # the three newest runs, whatever their commit
    python -m bench.summary FILE.json ...   # these runs (files written by bench.run)

Each run measures every figure against its ceiling in that run. On a shared machine a cell
near its line moves by about ±10 points from one run to the next, so one run's verdict on it
is a coin toss; the median over three or more runs is the figure to judge. Writes
bench/results/summary.md as well.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report
from .procs import ROOT

RUNS = ROOT / "bench" / "results" / "runs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="runs' JSON files (default: see below)")
    parser.add_argument("--last", type=int, help="the newest N runs in bench/results/runs/")
    args = parser.parse_args(argv)
    files = args.files or _default_runs(args.last)
    if not files:
        print(f"no runs in {RUNS}: `make bench` keeps each run there", file=sys.stderr)
        return 2
    runs = [(f.name, json.loads(f.read_text())) for f in files]
    text = "\n".join(report.summary_lines(runs))
    print(text)
    (ROOT / "bench" / "results" / "summary.md").write_text(text + "\n")
    return 0


def _default_runs(last: int | None) -> list[Path]:
    files = sorted(RUNS.glob("*.json"))  # named <start time>-<commit>.json: oldest first
    if last:
        return files[-last:]
    if not files:
        return []
    newest_commit = files[-1].stem.rsplit("-", 1)[-1]
    return [f for f in files if f.stem.rsplit("-", 1)[-1] == newest_commit]


if __name__ == "__main__":
    sys.exit(main())
