"""Instructions per registration, counted by valgrind: a figure the machine's load does not move.

    python -m bench.instructions                          # eventsvc and the minimal-insert ceiling, SQLite
    python -m bench.instructions --backends sqlite,postgresql --count 200
    python -m bench.instructions --targets eventsvc       # one side of an A/B: run, change, run again
    python -m bench.instructions --step page              # the event page alone, as a new visitor GETs it

Throughput and latency on this shared machine swing by ±15% between runs of the same
code, so a change worth 3% cannot be seen in them. Here each target runs in one process
under `valgrind --tool=callgrind`, which counts the instructions the process executes
(not time: cache misses, waiting and the kernel's work are not in it). The process does
what a load-generator user does, through Flask's test client: GET the form (token, cookie),
POST it with a unique email, `--warmup` times unmeasured; then callgrind's counters are
zeroed, `--count` registrations run, and the counters are dumped. The same code on the same
input counts the same whether the machine is quiet or busy, to within about 0.5% (the random
tokens and addresses of each run remain), so a change worth 1% or more can be compared with its
parent. Each target takes 1–2 minutes (valgrind
runs Python about 50 times slower). Needs valgrind (`apt-get install valgrind`).

`--step page` counts only the GET of the form page (the event page, with a new CSRF token
and session cookie for every visitor), per GET: the public page the load generator's `pages`
workload asks for most.

The test client's own work is counted too (the same for every target), so the ratio
understates the gap between the app and the ceiling; `make bench` gives the real one.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import PYTHON, make_workdir
from .procs import ROOT
from .testclient import TARGETS, get_form, load_app, post_form, target_environment

SLUG = "bench-instructions"
STEPS = {"registration": "registration", "page": "page GET"}  # --step → what a count is per
_DUMP = "measured"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS), help="eventsvc and/or minimal-insert")
    parser.add_argument("--backends", default="sqlite", help="sqlite and/or postgresql")
    parser.add_argument("--count", type=int, default=100, help="measured iterations (registrations, or page GETs with --step page)")
    parser.add_argument("--warmup", type=int, default=30, help="iterations before the counters are zeroed")
    parser.add_argument("--step", choices=STEPS, default="registration",
                        help="what one measured iteration is: a registration (GET + POST) or the page's GET")
    parser.add_argument("--drive", choices=TARGETS, help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.count, args.warmup, args.step)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    workdir = make_workdir()
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            counts = {target: count_target(target, backend, workdir, args.count, args.warmup, args.step)
                      for target in targets}
            for target, per_iteration in counts.items():
                line = f"{backend:10} {target:15} {per_iteration / 1e6:8.3f} M instructions per {STEPS[args.step]}"
                if target != "minimal-insert" and "minimal-insert" in counts:
                    line += f"  (minimal-insert ÷ {target}: {counts['minimal-insert'] / per_iteration:.0%})"
                print(line, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def count_target(target: str, backend: str, workdir: Path, count: int, warmup: int,
                 step: str = "registration") -> float:
    """Run `target` under callgrind in a throw-away database; instructions per measured iteration."""
    with target_environment(target, backend, workdir, slug=SLUG, capacity=count + warmup + 100,
                            label="instr") as env:
        # A fixed hash seed: with a random one, dict and set layouts (and so the count) vary a little.
        env = dict(env, PYTHONHASHSEED="0")
        out = workdir / f"callgrind-{backend}-{target}.out"
        started = time.monotonic()
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        PYTHON, "-m", "bench.instructions", "--drive", target,
                        "--count", str(count), "--warmup", str(warmup), "--step", step],
                       env=env, cwd=ROOT, check=True, timeout=1800,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"[instructions] {backend} {target}: {time.monotonic() - started:.0f} s under valgrind",
              file=sys.stderr, flush=True)
        return measured_instructions(out) / count


def measured_instructions(out: Path) -> int:
    """The instruction total of the dump taken at the end of the measured loop."""
    for dump in sorted(out.parent.glob(out.name + "*")):
        text = dump.read_text(errors="replace")
        if f"\ndesc: Trigger: dump {_DUMP}\n" in text:  # what `callgrind_control --dump=<hint>` writes
            match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
            if match:
                return int(match.group(1))
    raise RuntimeError(f"no '{_DUMP}' dump beside {out}")


def drive(target: str, count: int, warmup: int, step: str = "registration") -> None:
    """Inside valgrind: `warmup` iterations, zero the counters, `count` iterations, dump."""
    app, path = load_app(target), f"/e/{SLUG}"

    def iteration(n: int) -> None:
        client = app.test_client()  # a new visitor: no cookies
        token = get_form(client, path, n)
        if step == "registration":
            post_form(client, path, n, token, "instructions")

    for n in range(warmup):
        iteration(n)
    _callgrind("-z")
    for n in range(warmup, warmup + count):
        iteration(n)
    _callgrind("--dump=" + _DUMP)


def _callgrind(option: str) -> None:
    subprocess.run(["callgrind_control", option, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
