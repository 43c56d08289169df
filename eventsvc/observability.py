"""Logs and metrics: `init_observability(app)`.

Logs
- One line per request on the `eventsvc.request` logger: request id, method,
  path, status, duration. JSON lines when EVENTSVC_ENV=production, readable
  lines in development; under `testing` the handlers are left to the test
  runner (the records are the same).
- The request id is the caller's `X-Request-ID` when it is a sane token (nginx
  sets one, see docs/deploy.md), else a new one; it is returned in the
  `X-Request-ID` response header and added to every log line of the request.
- No personal data: the path is logged without its query string, the personal
  token in `/r/<token>/…` is logged as `/r/<redacted>/…`, and every line this
  module formats (any logger, tracebacks included) has the same redaction
  plus e-mail addresses replaced by `<email>`. Client IP addresses are not
  logged. Names cannot be recognised by a pattern: never pass them to a logger.

Metrics (Prometheus, `prometheus_client`) at `GET /metrics`:
- eventsvc_http_requests_total{method,endpoint,status}
- eventsvc_http_request_duration_seconds{method,endpoint,status} (histogram)
- eventsvc_registrations_total{outcome}                   count_registration()
- eventsvc_outbox_delivery_latency_seconds (histogram)    observe_delivery()
- eventsvc_outbox_delivery_failures_total{reason}         count_delivery_failure()
- eventsvc_outbox_messages{state}, eventsvc_outbox_due_messages,
  eventsvc_outbox_oldest_due_age_seconds, eventsvc_worker_heartbeat_age_seconds,
  eventsvc_outbox_collector_up: read from the database at scrape time, so
  every web process reports the same global values (aggregate with max()).
- Several gunicorn processes: set PROMETHEUS_MULTIPROC_DIR (an empty
  directory, emptied at every start) in the environment *before* the app is
  imported; /metrics then adds up all processes (prometheus_client's
  multiprocess mode). Without it each scrape sees only the process it hit.
- The outbox worker is a separate process: `start_worker_metrics_server(app)`
  serves its own metrics (delivery latency and failures) on
  WORKER_METRICS_PORT when that is set.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from datetime import datetime, timezone

from flask import Response, current_app, has_request_context, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily

EXTENSION_KEY = "eventsvc_observability"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-ID"
QUIET_ENDPOINTS = {"health.healthz", "health.readyz", "metrics"}  # probes and scrapes: logged at DEBUG

request_log = logging.getLogger("eventsvc.request")
_APP_LOG = logging.getLogger("eventsvc")  # between request_log and the root
log = logging.getLogger(__name__)

# ---------------------------------------------------------------- redaction

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PERSONAL_PATH = re.compile(r"(/r/)(?!<redacted>)[^/\s?#\"'\]\[<>]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def redact(text: str) -> str:
    """Remove personal tokens (/r/<token>) and e-mail addresses from a log text."""
    if not text:
        return text
    # Most texts hold neither pattern's anchor: skip the regular expressions (one scan each).
    if "/r/" not in text and "@" not in text and "%40" not in text:
        return text
    return _EMAIL.sub("<email>", _PERSONAL_PATH.sub(r"\1<redacted>", text))


def loggable_path(path: str) -> str:
    """The request path as it may be logged: no query string, no token, no address."""
    return redact(path.split("?", 1)[0])


# ---------------------------------------------------------------- log formatting

_RECORD_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "endpoint")


class RequestIdFilter(logging.Filter):
    """Put the current request id on every record (`-` outside a request)."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = request_id() if has_request_context() else "-"
        return True


# json.dumps() with any option builds a new encoder for every call: one, kept, writes the same.
_encode_json = json.JSONEncoder(ensure_ascii=False, default=str).encode
_second_text = (None, "")  # (a whole second, its ISO 8601 text in UTC): every line of that second shares it


def _timestamp(created: float) -> str:
    """`created` as datetime.isoformat(timespec="milliseconds") writes it in UTC."""
    global _second_text
    fraction, second = math.modf(created)
    microseconds = round(fraction * 1e6)  # rounded as datetime.fromtimestamp() rounds it
    if microseconds >= 1_000_000:
        second, microseconds = second + 1, microseconds - 1_000_000
    kept = _second_text
    if kept[0] != second:
        kept = _second_text = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{kept[1]}.{microseconds // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, redacted."""

    def format(self, record):
        entry = _json_entry(record.created, record.levelname, record.name, record.getMessage(),
                            {name: getattr(record, name, None) for name in _RECORD_FIELDS})
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return _encode_json(entry)


def _json_entry(created: float, level: str, logger: str, message: str, fields: dict) -> dict:
    entry = {"ts": _timestamp(created), "level": level, "logger": logger, "msg": redact(message)}
    for name, value in fields.items():
        if value is not None and value != "-":
            entry[name] = redact(value) if isinstance(value, str) else value
    return entry


class ReadableFormatter(logging.Formatter):
    """`12:00:01 INFO eventsvc.request [request-id] GET /e/slug 200 12.3 ms`, redacted."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", "%H:%M:%S")

    def format(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return redact(super().format(record))


class _DropWerkzeugAccessLines(logging.Filter):
    """The dev server's own access line repeats ours, with the raw path: drop it."""

    _ACCESS = re.compile(r'^\S+ - - \[[^\]]*\] "')

    def filter(self, record):
        return not self._ACCESS.match(str(record.msg))


def configure_logging(app) -> logging.Handler | None:
    """Route the root logger to stderr in the format EVENTSVC_ENV asks for.

    Idempotent (replaces the handler a previous call installed). Under
    `testing` nothing is installed: the test runner owns the handlers.
    """
    env = app.config.get("EVENTSVC_ENV", "development")
    level = str(app.config.get("LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO").upper()
    # alembic's logging.fileConfig (run by `flask db upgrade` in the same process, as the tests do)
    # disables every logger that exists at that moment; ours must keep working.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (name == "eventsvc" or name.startswith("eventsvc.")) and isinstance(logger, logging.Logger):
            logger.disabled = False
    if env == "testing":
        return None
    logging.getLogger("eventsvc").setLevel(level)
    # Neither format shows where a call came from or which thread or process made it, so the
    # logging module need not look these up for every record (its HOWTO, "Optimization"):
    # walking the stack for the caller is about half of what a request's log line costs.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    from flask.logging import default_handler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_eventsvc", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._eventsvc = True
    handler.setFormatter(JsonFormatter() if env == "production" else ReadableFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    app.logger.removeHandler(default_handler)  # everything goes through the root handler, once
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, _DropWerkzeugAccessLines) for f in werkzeug.filters):
        werkzeug.addFilter(_DropWerkzeugAccessLines())
    return handler


# ---------------------------------------------------------------- metrics

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DELIVERY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
REGISTRATION_OUTCOMES = {"confirmed", "waitlisted", "already_registered", "refused"}
FAILURE_REASONS = {"permanent", "retry", "exhausted", "connection", "render", "server_unavailable"}

# Multiprocess mode writes every metric value to a file in this directory, from
# the moment a metric is built (below): it must exist before then.
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

HTTP_REQUESTS = Counter("eventsvc_http_requests", "HTTP requests handled.",
                        ["method", "endpoint", "status"])
HTTP_LATENCY = Histogram("eventsvc_http_request_duration_seconds", "Time to handle an HTTP request.",
                         ["method", "endpoint", "status"], buckets=_HTTP_BUCKETS)
REGISTRATIONS = Counter("eventsvc_registrations", "Registrations by outcome.", ["outcome"])
DELIVERY_LATENCY = Histogram("eventsvc_outbox_delivery_latency_seconds",
                             "From the moment a message was due (queued, or its scheduled time) "
                             "until the SMTP server accepted it.", buckets=_DELIVERY_BUCKETS)
DELIVERY_FAILURES = Counter("eventsvc_outbox_delivery_failures", "Failed delivery attempts by reason.",
                            ["reason"])


# SQLite lets one unit of work write at a time (transaction._WriterQueue): how long each waited
# for its turn and how long it held it. Their ratio shows how close the one writer is to full.
_WRITER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SQLITE_WRITER_WAIT = Histogram("eventsvc_sqlite_writer_wait_seconds",
                               "Time a unit of work waited for its turn to write to the SQLite database.",
                               buckets=_WRITER_BUCKETS)
SQLITE_WRITER_HOLD = Histogram("eventsvc_sqlite_writer_hold_seconds",
                               "Time a unit of work held the turn to write to the SQLite database.",
                               buckets=_WRITER_BUCKETS)


def count_registration(status: str) -> None:
    """One registration request's outcome: confirmed, waitlisted, already_registered, refused, …"""
    REGISTRATIONS.labels(outcome=status if status in REGISTRATION_OUTCOMES else "other").inc()


def observe_delivery(seconds: float) -> None:
    """A message was accepted by the SMTP server `seconds` after it was due."""
    DELIVERY_LATENCY.observe(max(float(seconds), 0.0))


def count_delivery_failure(kind: str) -> None:
    """A failed attempt: permanent, retry, exhausted, connection, render or server_unavailable."""
    DELIVERY_FAILURES.labels(reason=kind if kind in FAILURE_REASONS else "other").inc()


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class OutboxCollector:
    """Outbox depth and worker heartbeat, read from the database at scrape time."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from .health import _outbox_figures
        from .extensions import db
        from .types import utcnow

        up = GaugeMetricFamily("eventsvc_outbox_collector_up",
                               "1 when the outbox figures below could be read from the database.")
        now = utcnow()
        try:
            with self.app.app_context(), db.engine.connect() as conn:
                figures = _outbox_figures(conn, now)
                conn.rollback()
                heartbeat_age = self._heartbeat_age(conn, now)
        except Exception as error:
            log.warning("metrics: outbox figures unavailable: %s", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = GaugeMetricFamily("eventsvc_outbox_messages", "Outbox rows by state.", labels=["state"])
        for state, count in sorted(figures["by_status"].items()):
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily("eventsvc_outbox_due_messages", "Pending rows that are due now (the backlog).",
                                value=figures["due"])
        yield GaugeMetricFamily("eventsvc_outbox_oldest_due_age_seconds",
                                "How long the oldest due pending row has been due.",
                                value=figures["oldest_due_age_seconds"])
        if heartbeat_age is not None:
            yield GaugeMetricFamily("eventsvc_worker_heartbeat_age_seconds",
                                    "Age of the newest outbox worker heartbeat.", value=heartbeat_age)

    @staticmethod
    def _heartbeat_age(conn, now):
        from .health import _newest_heartbeat

        try:
            return _newest_heartbeat(conn, now)[0]
        except Exception:  # no heartbeat table (yet)
            return None
        finally:
            conn.rollback()


class _Collectors:
    """Quacks like a registry for generate_latest(): the union of several collectors."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()


def process_registry():
    """The registry of this process's counters, or of all processes in multiprocess mode."""
    if not multiprocess_mode():
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def metrics_view():
    data = generate_latest(_Collectors(process_registry(), OutboxCollector(current_app._get_current_object())))
    return Response(data, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def start_worker_metrics_server(app) -> int | None:
    """For `flask worker`: serve this process's metrics on WORKER_METRICS_PORT (if set).

    Returns the port, or None when no port is configured.
    """
    port = app.config.get("WORKER_METRICS_PORT") or os.environ.get("WORKER_METRICS_PORT")
    if not port:
        return None
    from prometheus_client import start_http_server

    address = app.config.get("WORKER_METRICS_ADDR") or os.environ.get("WORKER_METRICS_ADDR") or "127.0.0.1"
    start_http_server(int(port), addr=address, registry=process_registry())
    return int(port)


# ---------------------------------------------------------------- requests

_ENVIRON_ID = "eventsvc.request_id"
_ENVIRON_ID_HEADER = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")  # where WSGI puts the header
_ENVIRON_STARTED = "eventsvc.request_started"


def request_id() -> str:
    """This request's id: the caller's X-Request-ID when it is a sane token, else a new one."""
    # Kept in the WSGI environ, which belongs to this request alone (`g` lives
    # as long as the app context, which a test or a CLI command may share).
    return _request_id(request.environ)


def _request_id(environ) -> str:
    rid = environ.get(_ENVIRON_ID)
    if rid is None:
        given = environ.get(_ENVIRON_ID_HEADER, "")
        rid = environ[_ENVIRON_ID] = given if _SANE_REQUEST_ID.match(given) else os.urandom(16).hex()
    return rid


_REQUEST_METRICS: dict[tuple[str, str, str], tuple] = {}


def _request_metrics(method: str, endpoint: str, status: str) -> tuple:
    """The counter and histogram children of one label set, looked up once per process.
    (Bounded: methods and endpoints are fixed sets, status codes are few.)"""
    key = (method, endpoint, status)
    children = _REQUEST_METRICS.get(key)
    if children is None:
        children = _REQUEST_METRICS[key] = (HTTP_REQUESTS.labels(method=method, endpoint=endpoint, status=status),
                                            HTTP_LATENCY.labels(method=method, endpoint=endpoint, status=status))
    return children


def _start_request():
    environ = request.environ
    environ[_ENVIRON_STARTED] = time.perf_counter()
    _request_id(environ)


def _finish_request(response):
    this_request = request._get_current_object()  # one context lookup, not one per use
    environ = this_request.environ
    started = environ.get(_ENVIRON_STARTED)  # missing when an earlier before_request refused
    duration = time.perf_counter() - started if started is not None else 0.0
    rid = _request_id(environ)
    response.headers[REQUEST_ID_HEADER] = rid
    rule = this_request.url_rule
    endpoint = rule.endpoint if rule is not None else "unmatched"
    method = this_request.method if this_request.method in _METHODS else "other"
    status = str(response.status_code)
    counter, latency = _request_metrics(method, endpoint, status)
    counter.inc()
    latency.observe(duration)
    level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
    if not request_log.isEnabledFor(level):
        return response
    path = loggable_path(this_request.path)
    duration_ms = round(duration * 1000, 1)
    fields = {"request_id": rid, "method": method, "path": path, "status": response.status_code,
              "duration_ms": duration_ms, "endpoint": endpoint}
    if not _write_request_line(level, f"{method} {path} {status} {duration_ms:.1f} ms", fields):
        request_log.log(level, "%s %s %s %.1f ms", method, path, status, duration_ms, extra=fields)
    return response


def _write_request_line(level: int, message: str, fields: dict) -> bool:
    """Write the request's line straight to the JSON handler configure_logging installed, as
    logging would through it, when nothing else would see the record: no other handler, no
    filter of ours in the way. Going through the logging module (a LogRecord, the logger
    hierarchy, the formatter) costs about 5% of a cached page. False: log it as usual."""
    handlers = logging.root.handlers
    if len(handlers) != 1 or request_log.handlers or request_log.filters or _APP_LOG.handlers \
            or _APP_LOG.filters or not (request_log.propagate and _APP_LOG.propagate):
        return False
    handler = handlers[0]
    if not getattr(handler, "_eventsvc", False) or type(handler.formatter) is not JsonFormatter \
            or level < handler.level or not all(type(f) is RequestIdFilter for f in handler.filters):
        return False
    line = _encode_json(_json_entry(time.time(), logging.getLevelName(level), request_log.name, message, fields))
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    except Exception:  # reported as StreamHandler.emit reports it (part of the line may be out)
        handler.handleError(request_log.makeRecord(request_log.name, level, "(unknown file)", 0, message, None, None,
                                                   extra=fields))
    finally:
        handler.release()
    return True


def init_observability(app):
    """Structured logs with request ids, and Prometheus metrics at /metrics. Idempotent."""
    if EXTENSION_KEY in app.extensions:
        return app.extensions[EXTENSION_KEY]
    configure_logging(app)
    directory = os.environ.get(MULTIPROC_ENV)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    state = {"multiprocess": bool(directory)}
    app.extensions[EXTENSION_KEY] = state
    return state
