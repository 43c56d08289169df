"""Processes the benchmark starts: each one stopped by its PID, always.

`Processes` is a context manager; everything started through it is stopped
(SIGTERM to the PID, then SIGKILL to the PID after a grace period) when the
block ends, whether it ends normally, by an exception or by Ctrl-C.
"""
from __future__ import annotations

import os
import signal
from signal import SIGTERM  # a default below, where the method `signal` hides the module
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in (5000, 8025):  # the dev server's and dev mail sink's ports (production refuses 8025)
            return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A started process, known by its PID, with its output in `log` (None: discarded).

    The tests' process helpers (tests/processes.py) use this class too."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path | None):
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last words (a crash, a power cut)."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Readiness: poll the port until it accepts a connection (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if port_open(port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {HOST}:{port} within {timeout}s:\n{self.tail()}")

    def stop(self, grace: float = 10.0, sig: int = SIGTERM) -> int | None:
        """Stop by PID: `sig`, wait up to `grace`, then SIGKILL."""
        if self.alive():
            self.signal(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


class Processes:
    """Start processes; stop every one of them (by PID, newest first) on exit."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict, log: bool = True) -> Proc:
        self.logdir.mkdir(parents=True, exist_ok=True)
        path = self.logdir / f"{name}.log" if log else None
        out = open(path, "ab") if path else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        finally:
            if path:
                out.close()
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 10.0) -> int | None:
        try:
            return proc.stop(grace)
        finally:
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def run_checked(argv: list[str], env: dict, timeout: float, what: str) -> str:
    """Run a short command to completion (bounded); raise with its output if it fails."""
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{what} took longer than {timeout}s") from error
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def peak_rss_kib(pid: int) -> tuple[int | None, int | None]:
    """(VmHWM, VmRSS) in KiB of `pid` and, summed, of its child processes."""
    hwm = rss = None
    for p in [pid, *_children(pid)]:
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                hwm = (hwm or 0) + int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = (rss or 0) + int(line.split()[1])
    return hwm, rss


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found += [kid, *_children(kid)]
    return found


def install_sigterm_as_interrupt() -> None:
    """A SIGTERM to the benchmark unwinds like Ctrl-C, so every `finally` stops its servers."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds used so far by `pid` and by each of its live child processes."""
    seconds = {}
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[p] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)
    return seconds


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS, sum(values[:8]) / _TICKS


class CpuMeter:
    """CPU used by a server's process tree and by the whole machine between start() and stop()."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.t0 = time.monotonic()
        self.by_process0 = cpu_seconds_by_process(self.pid)
        self.busy0, self.total0 = machine_cpu()
        return self

    def __exit__(self, *exc):
        self.seconds = max(time.monotonic() - self.t0, 1e-9)
        by_process = cpu_seconds_by_process(self.pid)
        self.server = sum(by_process.values()) - sum(self.by_process0.values())
        busy1, total1 = machine_cpu()
        self.machine_busy_cores = (busy1 - self.busy0) / self.seconds
        # The share of the workers' CPU that the busiest one used: 1 ÷ workers when the kernel spread
        # the connections evenly, near 100% when one worker took them all (gunicorn's workers race
        # for accept(), and a gthread worker keeps the connections it won open).
        workers = [by_process[p] - self.by_process0[p] for p in by_process if p != self.pid and p in self.by_process0]
        self.busiest_worker_share = max(workers) / sum(workers) if len(workers) > 1 and sum(workers) > 0 else None
        return False
