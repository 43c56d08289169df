"""A bounded HTTP load generator, run as its own process.

    python -m bench.loadgen register --url http://127.0.0.1:8001/e/some-event --users 32 --count 2000 --duration 10
    python -m bench.loadgen get --url http://127.0.0.1:8001/ --users 32 --count 20000 --duration 5

`register`: every user does what a person does, over and over: GET the form
page (take the `csrf_token` hidden input and the session cookie), POST the
form (name, email, organisation, role, consent=y, csrf_token) with a unique
email, and expect 303. One completed registration = one GET+POST pair; its
latency is the time of the pair. Each iteration is a new person: it starts
without cookies.

`get`: every user GETs the given URL(s) in turn and expects 200 (or 304 with
`--conditional`, where each user remembers ETag/Last-Modified per URL like a
browser cache).

Bounds: a user starts a new iteration only while fewer than `--count` have
been started and `--duration` seconds have not passed; every request has a
`--timeout`; the whole run is cancelled at duration + timeout + 5 s; it stops
early after `--max-errors` errors. The result is one JSON object on stdout.

Cookies are kept by hand (name=value from Set-Cookie, sent back in a Cookie
header), so the production config's `Secure` session cookie works over plain
HTTP on 127.0.0.1, as it would behind a TLS-terminating proxy. Like such a
proxy, every request carries `X-Forwarded-Proto: https` and an
`X-Forwarded-For` address that is different for every person (10.x.y.z), with
a matching https Origin/Referer on the POST; an app that trusts one proxy hop
(ProxyFix) then sees a distinct client per person, as in production, instead
of 50,000 registrations from 127.0.0.1. `--no-forwarded` sends none of this.

Two client engines: `raw` (default: HTTP/1.1 on asyncio streams, keep-alive
when the server allows it, about 10x less client CPU than httpx, which
matters on a 2-core machine where the client shares the CPU with the server)
and `httpx` (the pinned httpx.AsyncClient). The client's own CPU use is
reported (`client_cpu`, in cores) so a client-bound ceiling is visible.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import resource
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlencode, urlsplit

USER_AGENT = "eventsvc-bench/1 (+bench/loadgen.py)"
ACCEPT_LANGUAGE = "nl-NL,nl;q=0.9,en;q=0.8"
_CSRF_INPUT = re.compile(rb'<input[^>]*\bname="csrf_token"[^>]*>')
_VALUE = re.compile(rb'\bvalue="([^"]*)"')


class ClosedEarly(ConnectionError):
    """The server closed a connection before sending a response."""


def find_csrf_token(body: bytes) -> str | None:
    tag = _CSRF_INPUT.search(body)
    if not tag:
        return None
    value = _VALUE.search(tag.group(0))
    return value.group(1).decode() if value else None


def cookie_header(headers) -> str:
    """name=value pairs of every Set-Cookie (attributes such as Secure ignored)."""
    pairs = {}
    for name, value in headers:
        if name == "set-cookie":
            pair = value.split(";", 1)[0].strip()
            if "=" in pair:
                key, _, val = pair.partition("=")
                pairs[key.strip()] = val.strip()
    return "; ".join(f"{k}={v}" for k, v in pairs.items())


def header(headers, wanted):
    for name, value in headers:
        if name == wanted:
            return value
    return None


# -- client engines -------------------------------------------------------------

class RawClient:
    """One user's HTTP/1.1 connection on asyncio streams; reconnects when closed."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None
        self.connections = 0
        self.origin = f"http://{host}:{port}"

    async def request(self, method: str, path: str, headers: dict | None = None, body: bytes = b""):
        return await asyncio.wait_for(self._request(method, path, headers or {}, body), self.timeout)

    async def _request(self, method, path, headers, body):
        for attempt in (1, 2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.connections += 1
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                     f"User-Agent: {USER_AGENT}", "Accept: text/html,*/*",
                     f"Accept-Language: {ACCEPT_LANGUAGE}", "Connection: keep-alive"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            if body or method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            try:
                self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                await self.writer.drain()
                return await self._read_response(method)
            except (ClosedEarly, ConnectionResetError, BrokenPipeError):
                self.close()
                # An idle keep-alive connection the server had already closed:
                # nothing was processed, so send again once on a new connection.
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_response(self, method):
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ClosedEarly("connection closed before the response")
        version, status = status_line.split(b" ", 2)[:2]
        status = int(status)
        headers = []
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = header(headers, "content-length")
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif length is not None:
            data = await reader.readexactly(int(length))
        elif (header(headers, "transfer-encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(chunks)
        else:
            data = await reader.read()
            self.close()
            return status, headers, data
        connection = (header(headers, "connection") or "").lower()
        if connection == "close" or (version == b"HTTP/1.0" and connection != "keep-alive"):
            self.close()
        return status, headers, data

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
        self.reader = self.writer = None

    async def aclose(self):
        self.close()


class HttpxClient:
    """The same interface on the pinned httpx.AsyncClient (one client per user)."""

    def __init__(self, host: str, port: int, timeout: float):
        import http.cookiejar

        import httpx

        # Cookies are handled by hand (see the module docstring): a jar that refuses everything.
        jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.base = self.origin = f"http://{host}:{port}"
        self.client = httpx.AsyncClient(
            timeout=timeout, cookies=jar, follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"User-Agent": USER_AGENT, "Accept-Language": ACCEPT_LANGUAGE},
        )
        self.connections = 0

    async def request(self, method, path, headers=None, body=b""):
        response = await self.client.request(method, self.base + path, headers=headers or {},
                                             content=body or None)
        return (response.status_code, [(k.lower(), v) for k, v in response.headers.multi_items()],
                response.content)

    async def aclose(self):
        await self.client.aclose()


ENGINES = {"raw": RawClient, "httpx": HttpxClient}


# -- the run --------------------------------------------------------------------

class Run:
    """Shared state of one bounded run: what was started, what finished, how long it took."""

    def __init__(self, count: int, duration: float, max_errors: int):
        self.count, self.duration, self.max_errors = count, duration, max_errors
        self.started = 0
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.error_samples: dict[str, str] = {}
        self.bytes = 0
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + duration
        self.last_done = self.t0

    def next_index(self) -> int | None:
        if (self.started >= self.count or time.perf_counter() >= self.deadline
                or sum(self.errors.values()) >= self.max_errors):
            return None
        self.started += 1
        return self.started

    def ok(self, latency: float, nbytes: int = 0):
        self.latencies.append(latency)
        self.bytes += nbytes
        self.last_done = time.perf_counter()

    def error(self, kind: str, sample: bytes | str = b""):
        self.errors[kind] += 1
        self.last_done = time.perf_counter()
        if kind not in self.error_samples:
            text = sample.decode("utf-8", "replace") if isinstance(sample, bytes) else str(sample)
            # The page's error summary is what explains a 4xx; keep the interesting part.
            match = re.search(r'class="error-summary".*?</ul>', text, re.S)
            text = match.group(0) if match else text
            self.error_samples[kind] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()[:300]


_ADDRESS_BASE = random.randrange(1 << 24)


def person_headers(n: int, forwarded: bool) -> dict:
    """What a TLS-terminating proxy adds for the n-th person: their own address, https."""
    if not forwarded:
        return {}
    a = (_ADDRESS_BASE + n) % (1 << 24)
    return {"X-Forwarded-For": f"10.{a >> 16}.{(a >> 8) & 255}.{a & 255}", "X-Forwarded-Proto": "https"}


def registration_fields(token: str, n: int, prefix: str) -> dict:
    """What the n-th person of a run (`prefix`) fills in on the form: a unique address each."""
    return {"csrf_token": token, "name": f"Deelnemer {prefix} {n}", "email": f"{prefix}-{n}@bench.example.org",
            "organisation": "Bench BV", "role": "Tester", "consent": "y"}


async def register_user(uid: int, client, path: str, run: Run, prefix: str, forwarded: bool = True):
    scheme = "https" if forwarded else "http"
    origin = client.origin.replace("http://", f"{scheme}://", 1)
    while (n := run.next_index()) is not None:
        proxy = person_headers(n, forwarded)
        t0 = time.perf_counter()
        try:
            status, headers, body = await client.request("GET", path, dict(proxy))
            if status != 200:
                run.error(f"GET {status}", body)
                continue
            token = find_csrf_token(body)
            if token is None:
                run.error("GET without csrf_token", body)
                continue
            form = urlencode(registration_fields(token, n, prefix)).encode()
            # What a browser sends with a form POST; Referer matters behind TLS (Flask-WTF's strict check).
            post_headers = {"Content-Type": "application/x-www-form-urlencoded",
                            "Origin": origin, "Referer": origin + path, **proxy}
            cookies = cookie_header(headers)
            if cookies:
                post_headers["Cookie"] = cookies
            status2, _headers2, body2 = await client.request("POST", path, post_headers, form)
            if status2 != 303:
                run.error(f"POST {status2}", body2)
                continue
            run.ok(time.perf_counter() - t0, len(body) + len(body2))
        except asyncio.TimeoutError:
            run.error("timeout")
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            run.error(type(error).__name__, str(error))


async def get_user(uid: int, client, paths: list[str], run: Run, conditional: bool, forwarded: bool = True):
    cache: dict[str, dict] = {}
    proxy = person_headers(uid, forwarded)
    i = uid
    while run.next_index() is not None:
        path = paths[i % len(paths)]
        i += 1
        headers = dict(proxy)
        if conditional and path in cache:
            headers.update(cache[path])
        t0 = time.perf_counter()
        try:
            status, response_headers, body = await client.request("GET", path, headers)
            if status == 200 or (status == 304 and conditional):
                run.ok(time.perf_counter() - t0, len(body))
                if conditional and status == 200:
                    validators = {}
                    if (etag := header(response_headers, "etag")):
                        validators["If-None-Match"] = etag
                    if (modified := header(response_headers, "last-modified")):
                        validators["If-Modified-Since"] = modified
                    cache[path] = validators
            else:
                run.error(f"GET {status}", body)
        except asyncio.TimeoutError:
            run.error("timeout")
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            run.error(type(error).__name__, str(error))


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[k]


async def run_load(args) -> dict:
    parts = urlsplit(args.url[0])
    host, port = parts.hostname, parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench.loadgen only talks to 127.0.0.1")
    paths = [urlsplit(u).path + (f"?{urlsplit(u).query}" if urlsplit(u).query else "") for u in args.url]
    engine = ENGINES[args.engine]
    prefix = f"{args.label or 'bench'}-{uuid.uuid4().hex[:10]}"

    async def phase(count, duration, tag):
        run = Run(count, duration, args.max_errors)
        clients = [engine(host, port, args.timeout) for _ in range(args.users)]
        if args.mode == "register":
            coros = [register_user(i, c, paths[i % len(paths)], run, f"{prefix}{tag}", args.forwarded)
                     for i, c in enumerate(clients)]
        else:
            coros = [get_user(i, c, paths, run, args.conditional, args.forwarded) for i, c in enumerate(clients)]
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            done, pending = await asyncio.wait(tasks, timeout=duration + args.timeout + 5)
            for task in pending:  # the hard bound: nothing outlives it
                task.cancel()
                run.error("cancelled at the hard time bound")
            if pending:
                await asyncio.wait(pending, timeout=5)
        finally:
            for c in clients:
                await c.aclose()
        run.connections = sum(c.connections for c in clients)
        return run

    if args.warmup > 0:
        warm = await phase(args.count, args.warmup, "w")
        warmup = {"completed": len(warm.latencies), "errors": dict(warm.errors)}
    else:
        warmup = None

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = await phase(args.count, args.duration, "")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = max(run.last_done - run.t0, 1e-9)
    lat = sorted(run.latencies)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    completed = len(lat)
    return {
        "mode": args.mode, "engine": args.engine, "url": args.url, "users": args.users,
        "count_bound": args.count, "duration_bound": args.duration,
        "started": run.started, "completed": completed, "errors": dict(run.errors),
        "error_count": sum(run.errors.values()), "error_samples": run.error_samples,
        "elapsed_s": round(elapsed, 3), "rate_per_s": round(completed / elapsed, 2),
        "p50_ms": ms(percentile(lat, 50)), "p95_ms": ms(percentile(lat, 95)),
        "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else None),
        "mean_ms": ms(sum(lat) / completed if completed else None),
        "bytes_per_iteration": round(run.bytes / completed) if completed else None,
        "connections": run.connections,
        "client_cpu": round(((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)) / elapsed, 3),
        "warmup": warmup,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("register", "get"))
    parser.add_argument("--url", action="append", required=True,
                        help="target URL on 127.0.0.1 (repeat for several; users and GETs cycle through them)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--count", type=int, default=2000, help="at most this many iterations (upper bound)")
    parser.add_argument("--duration", type=float, default=10.0, help="start no iteration after this many seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first")
    parser.add_argument("--timeout", type=float, default=15.0, help="per request, seconds")
    parser.add_argument("--max-errors", type=int, default=500, help="stop early after this many errors")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="raw")
    parser.add_argument("--conditional", action="store_true", help="get: revalidate with ETag/Last-Modified")
    parser.add_argument("--label", default="", help="prefix of the generated email addresses")
    parser.add_argument("--no-forwarded", dest="forwarded", action="store_false",
                        help="send no X-Forwarded-For/-Proto (see the module docstring)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.users < 1 or args.duration <= 0:
        parser.error("count, users and duration must be positive")
    result = asyncio.run(run_load(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
