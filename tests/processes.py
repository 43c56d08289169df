"""Real processes for the slow tests: gunicorn, outbox workers, the flask CLI.

Everything started here is stopped by its PID (SIGTERM, then SIGKILL after a
grace period), in a `finally` or a fixture teardown, and listens on
127.0.0.1 only. Output goes to a log file per process (never a pipe that
could fill up and block the process), so a failing test can show its tail.

    with Processes(tmp_path) as procs:
        web = procs.gunicorn(service_env(database_url))
        worker = procs.worker(service_env(database_url, mail_port=sink.port))
        with FormClient(web.url) as browser:
            browser.post_form(f"/e/{slug}", {...})
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

# A started process (by PID, with its log), and free ports on 127.0.0.1: shared with the benchmark.
from bench.procs import HOST, ROOT, free_port, port_open
from bench.procs import Proc as Process

# One key for every process of a test, so a CSRF token or a session cookie
# issued by one server is valid on another (as behind a load balancer).
SECRET_KEY = "eventsvc-test-processes-" + "k" * 40  # 64 characters
CSRF_PATTERNS = (re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"'),
                 re.compile(r'name="csrf_token" value="([^"]+)"'),
                 re.compile(r'value="([^"]+)" name="csrf_token"'))


def service_env(database_url: str, *, mail_port: int = 1, instance_dir: str | os.PathLike | None = None,
                **extra) -> dict:
    """The environment of a web or worker process of the test service.

    EVENTSVC_ENV=testing: plain-HTTP cookies (production's Secure cookies would not
    come back over http://127.0.0.1) and no production start-up checks.
    """
    env = dict(os.environ)
    for name in ("FLASK_DEBUG", "FLASK_APP", "FLASK_RUN_PORT"):
        env.pop(name, None)
    env.update(
        EVENTSVC_ENV="testing",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        MAIL_SERVER=HOST,
        MAIL_PORT=str(mail_port),
        MAIL_DEFAULT_SENDER="eventsvc <noreply@eventsvc.test>",
        BASE_URL="http://eventsvc.test",
        EVENTSVC_INSTANCE_DIR=str(instance_dir or Path(os.environ.get("PYTEST_TMP", "/tmp")) /
                                  "eventsvc-test-instance"),
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


def flask_command(*args) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


class WebServer(Process):
    """A gunicorn master (by PID) and the URL it serves."""

    def __init__(self, name, popen, log, port):
        super().__init__(name, popen, log)
        self.port = port
        self.url = f"http://{HOST}:{port}"

    def wait_ready(self, timeout: float = 30.0, path: str = "/") -> None:
        """Poll until `path` answers 200 (the app is imported and the database reachable)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                response = httpx.get(self.url + path, timeout=2)
                if response.status_code == 200:
                    return
                last = response.status_code
            except httpx.HTTPError as error:
                last = error
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout}s (last: {last!r}):\n{self.tail()}")


class Processes:
    """Starts processes and stops every one still running (newest first) on exit."""

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.started: list[Process] = []

    def _start(self, cls, name, argv, env, **extra) -> Process:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}-{len(self.started)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        process = cls(name, popen, log, **extra)
        self.started.append(process)
        return process

    def start(self, name: str, argv: list[str], env: dict) -> Process:
        return self._start(Process, name, argv, env)

    def mail_sink(self, port: int, directory, *, timeout: float = 15.0) -> Process:
        """`python -m eventsvc.devmail.sink` as its own process (so it can crash for real)."""
        sink = self._start(Process, "mailsink", [sys.executable, "-m", "eventsvc.devmail.sink", "--host", HOST,
                                                 "--port", str(port), "--dir", str(directory)], dict(os.environ))
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if not sink.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"mail sink did not listen on {port}:\n{sink.tail()}")
            time.sleep(0.05)
        return sink

    def gunicorn(self, env: dict, *, workers: int = 2, threads: int = 1, name: str = "gunicorn",
                 wait: bool = True, ready_timeout: float = 30.0) -> WebServer:
        """gunicorn on a free port of 127.0.0.1; ready (answers 200 on /) unless wait=False."""
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads),
                "-b", f"{HOST}:{port}", "--graceful-timeout", "5", "--timeout", "60",
                "--no-control-socket", "wsgi:app"]  # no shared ~/.gunicorn/gunicorn.ctl between servers
        server = self._start(WebServer, name, argv, env, port=port)
        if wait:
            server.wait_ready(ready_timeout)
        return server

    def worker(self, env: dict, *args: str, name: str = "worker") -> Process:
        """`flask --app wsgi worker ARGS` (long-running unless --once)."""
        return self._start(Process, name, flask_command("worker", *args), env)

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM to every PID still running (newest first), then wait; SIGKILL after `grace`."""
        running = [p for p in reversed(self.started) if p.alive()]
        for process in running:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.signal(signal.SIGKILL)
                process.popen.wait(10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def worker_totals(output: str) -> dict[str, int]:
    """Parse the worker's exit line: 'worker host:pid: sent 12, retried 0, failed 0, ...'."""
    match = re.search(r"sent (\d+), retried (\d+), failed (\d+)", output)
    if not match:
        return {}
    return dict(zip(("sent", "retried", "failed"), map(int, match.groups())))


def csrf_token_in(page: str) -> str:
    for pattern in CSRF_PATTERNS:
        match = pattern.search(page)
        if match:
            return match.group(1)
    raise AssertionError("no CSRF token on the page")


class FormClient:
    """A browser-like HTTP client: cookies, GET the form, POST it with its CSRF token."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=False)
        self.token: str | None = None  # a CSRF token a caller keeps for this session

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def csrf_token(self, path: str) -> str:
        response = self.http.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return csrf_token_in(response.text)

    def post_form(self, path: str, data: dict, *, form_path: str | None = None,
                  token: str | None = None) -> httpx.Response:
        data = dict(data, csrf_token=token or self.csrf_token(form_path or path))
        return self.http.post(path, data=data)

    def forget(self) -> None:
        """A new visitor: no cookies, no session."""
        self.http.cookies.clear()
        self.token = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FormClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def registration_form(n: int, **fields) -> dict:
    data = {"name": f"Deelnemer {n}", "email": f"person{n}@example.org", "organisation": "School",
            "role": "Leraar", "consent": "y"}
    data.update(fields)
    return data


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate()` until it returns something truthy (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def register_many(base_urls: list[str], slug: str, numbers, *, concurrency: int = 32,
                  timeout: float = 120.0) -> dict[int, httpx.Response | Exception]:
    """Register person N for each N in `numbers` through the public form, `concurrency` at a
    time, spread round-robin over `base_urls`. Returns N → response (or the exception)."""
    local = threading.local()
    clients: list[FormClient] = []
    lock = threading.Lock()

    def client_for(base_url):
        cache = getattr(local, "clients", None)
        if cache is None:
            cache = local.clients = {}
        if base_url not in cache:
            cache[base_url] = FormClient(base_url)
            with lock:
                clients.append(cache[base_url])
        return cache[base_url]

    def one(i, n):
        # Each thread is one browser session per server: it reads the form once and
        # then posts it for one person after another (the CSRF token lives as long
        # as the session), so the servers spend their time on registrations.
        client = client_for(base_urls[i % len(base_urls)])
        try:
            if client.token is None:
                client.token = client.csrf_token(f"/e/{slug}")
            return n, client.post_form(f"/e/{slug}", registration_form(n), token=client.token)
        except Exception as error:  # reported per registration by the caller
            return n, error

    deadline = time.monotonic() + timeout
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(one, i, n) for i, n in enumerate(numbers)]
            return dict(f.result(timeout=max(1.0, deadline - time.monotonic())) for f in futures)
    finally:
        for client in clients:
            client.close()


def as_header(message_id: str) -> str:
    """A row's `message_id` as it appears left of the "@" in the Message-ID header."""
    return message_id.replace(":", ".")


def message_ids(mails) -> list[str]:
    """The Message-ID of every received mail (ReceivedMail or raw bytes; no full parse)."""
    pattern = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.M | re.I)
    found = []
    for mail in mails:
        data = mail if isinstance(mail, bytes) else mail.data
        match = pattern.search(data)
        assert match, f"a mail without a valid Message-ID: {data[:400]!r}"
        found.append(match.group(1).decode())
    return found
