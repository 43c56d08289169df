"""Abuse and hostile input: headers, rate limits, honeypot, per-address cap,
request size, property-based form input and the Markdown sanitiser.

The app is the conftest one (SQLite and PostgreSQL). `init_security` is
called here only when `create_app` has not done it already, so these tests
run unchanged before and after it is wired in.
"""
import contextlib
import html
import io
import os
import pickle
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func, select

from eventsvc import create_app
from eventsvc.extensions import db
from eventsvc.formatting import render_markdown
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.security import (
    CONTENT_SECURITY_POLICY, EXTENSION_KEY, RATE_LIMITED_ENDPOINTS, init_security,
    registrations_per_address_allowed)

from bench.procs import free_port, port_open

from .conftest import csrf_token, test_config

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
LIMITS_OFF = {"RATELIMIT_ENABLED": False}


def secured(app):
    """The app with security wired: by create_app once wired, else here."""
    if EXTENSION_KEY not in app.extensions:
        init_security(app)
    return app


@pytest.fixture
def app(app):  # the conftest app, with security wired
    return secured(app)


@pytest.fixture
def app_config():
    # Most tests post many forms from one address; the rate-limit tests turn limits on.
    return dict(LIMITS_OFF)


def limits_on(**settings_):
    config = {"RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://", **settings_}
    return pytest.mark.parametrize("app_config", [config], ids=["limits-on"])


def form_data(client, event, **fields):
    data = {"name": "Zoë de Vries", "email": f"zoe-{uuid.uuid4().hex[:10]}@example.org",
            "organisation": "Stichting Primair", "role": "Bestuurder", "consent": "y"}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    data.setdefault("csrf_token", csrf_token(client, f"/e/{event.slug}"))
    return data


def post_form(client, event, **fields):
    return client.post(f"/e/{event.slug}", data=form_data(client, event, **fields))


def count(model, *where):
    db.session.rollback()  # a fresh snapshot: what the requests committed (SQLite WAL keeps the old one)
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


# ---------------------------------------------------------------- headers

def csp(response):
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d}


def test_every_page_carries_the_security_headers(client, make_event):
    event = make_event()
    responses = {
        "list": client.get("/"),
        "event": client.get(f"/e/{event.slug}"),
        "form error": client.post(f"/e/{event.slug}", data=form_data(client, event, name="")),
        "not found": client.get("/bestaat-niet"),
        "static": client.get("/static/style.css"),
    }
    assert responses["form error"].status_code == 422 and responses["not found"].status_code == 404
    for what, response in responses.items():
        headers = response.headers
        assert csp(response)["script-src"] == ["'self'"], what
        assert csp(response)["frame-ancestors"] == ["'none'"], what
        assert csp(response)["object-src"] == ["'none'"], what
        assert "unsafe-inline" not in headers["Content-Security-Policy"], what
        assert "unsafe-eval" not in headers["Content-Security-Policy"], what
        assert headers["X-Content-Type-Options"] == "nosniff", what
        assert headers["X-Frame-Options"] == "DENY", what
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin", what
        assert "camera=()" in headers["Permissions-Policy"], what
        assert "Strict-Transport-Security" not in headers, what  # only in production
    for response in responses.values():
        response.close()
    response = responses["event"]
    expected = "; ".join(f"{k} {v}" for k, v in CONTENT_SECURITY_POLICY.items())
    assert response.headers["Content-Security-Policy"] == expected
    assert "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:" in expected


def test_personal_and_join_pages_never_send_the_token_on(client, make_event, register, now):
    event = make_event(starts_at=now + timedelta(minutes=5))  # join window open
    registration = register(event)
    token = registration.token
    for path in (f"/r/{token}", f"/r/{token}/annuleren", f"/r/{token}/agenda.ics",
                 f"/r/{token}/join", "/r/" + "x" * 43):
        response = client.get(path)
        assert response.headers["Referrer-Policy"] == "no-referrer", path
        assert response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY", path
    join = client.get(f"/r/{token}/join")
    assert join.status_code == 303 and join.headers["Location"] == event.join_url


def test_every_page_needs_nothing_the_policy_forbids(app, client, make_event, register):
    """Walks every GET route (public, personal, organiser, logged in): no inline
    script, inline style, event-handler attribute or javascript: URL, so the CSP
    breaks nothing; and every answer carries the policy."""
    from flask import url_for

    from eventsvc.auth.services import create_organiser

    event = make_event(description="Zie **hier** [de agenda](https://example.org/agenda).")
    registration = register(event)
    registered = post_form(client, event)
    create_organiser("csp@example.org", "Organisator", "correct horse battery staple")
    with app.test_request_context():
        login = url_for("auth.login")
    logged_in = client.post(login, data={"email": "csp@example.org", "password": "correct horse battery staple",
                                         "csrf_token": csrf_token(client, login)})
    assert logged_in.status_code == 303
    values = {"event_id": event.id, "slug": event.slug, "token": registration.token,
              "registration_id": registration.id}
    paths = {"registered": registered.headers["Location"], "not found": "/bestaat-niet"}
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if "GET" in rule.methods and rule.endpoint != "static" and rule.arguments <= values.keys():
                paths[rule.endpoint] = url_for(rule.endpoint, **{k: values[k] for k in rule.arguments})
    assert {"events.show", "registrations.show", "auth.login"} <= paths.keys()
    for what, path in paths.items():
        response = client.get(path)
        assert response.status_code < 500 or what == "health.readyz", what
        assert csp(response)["script-src"] == ["'self'"], what
        if response.mimetype != "text/html":
            continue
        page = response.get_data(as_text=True)
        inline_scripts = [m for m in re.findall(r"<script\b[^>]*>", page, re.I) if "src=" not in m]
        assert not inline_scripts, what
        assert not re.search(r"<style\b", page, re.I), what
        assert not re.search(r"\sstyle\s*=", page, re.I), what
        assert _event_handler_attributes(page) == [], what
        assert "javascript:" not in page.lower(), what


def test_dev_mailbox_alone_may_use_inline_styles(tmp_path):
    """The /dev/mail page shows mail HTML in <iframe sandbox srcdoc>; a srcdoc
    document inherits the page's CSP and mail HTML is styled inline."""
    app = create_app({"EVENTSVC_ENV": "development", "SECRET_KEY": "x" * 40,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
                      "INSTANCE_DIR": str(tmp_path), "DEVMAIL_DIR": str(tmp_path / "devmail"),
                      "RATELIMIT_ENABLED": False})
    secured(app)
    client = app.test_client()
    mailbox = client.get("/dev/mail/")
    assert mailbox.status_code == 200
    assert csp(mailbox)["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp(mailbox)["script-src"] == ["'self'"]
    assert csp(mailbox)["frame-ancestors"] == ["'none'"]
    with client.get("/static/style.css") as other:
        assert csp(other)["style-src"] == ["'self'"]
    assert "Strict-Transport-Security" not in mailbox.headers


# ------------------------------------------- the policy in a real browser

@contextlib.contextmanager
def chromium_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("no Chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="nl-NL")
            page.csp_violations = []
            page.on("console", lambda m: "Content Security Policy" in m.text and page.csp_violations.append(m.text))
            yield page
        finally:
            browser.close()


@contextlib.contextmanager
def serving(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.mark.browser
def test_registering_in_a_browser_breaks_no_policy(app, make_event):
    event = make_event(description="Zie **hier** [de agenda](https://example.org/agenda).")
    with serving(app) as base, chromium_page() as page:
        page.goto(f"{base}/e/{event.slug}")
        page.fill("#name", "Zoë de Vries")
        page.fill("#email", "browser@example.org")
        page.check("#consent")
        page.click("form[action$='/e/" + event.slug + "'] button[type=submit]")
        page.wait_for_url(f"{base}/e/{event.slug}/aangemeld")
        assert "Bedankt voor uw aanmelding" in page.inner_text("main")
        assert page.evaluate("getComputedStyle(document.body).fontFamily")  # the stylesheet applies
        assert page.csp_violations == []
    assert count(Registration, Registration.email_normalized == "browser@example.org") == 1


@pytest.mark.browser
def test_dev_mailbox_shows_styled_mail_html_under_its_policy(tmp_path):
    from email.message import EmailMessage

    (tmp_path / "devmail").mkdir()
    mail = EmailMessage()
    mail["Subject"], mail["From"], mail["To"] = "Bevestiging", "events@example.org", "jan@example.org"
    mail.set_content("Hallo")
    mail.add_alternative('<html><body><p id="p" style="color:#0b5394">Hallo</p>'
                         '<script>document.title="pwned"</script></body></html>', subtype="html")
    (tmp_path / "devmail" / "20240101T000000-1.eml").write_bytes(bytes(mail))
    app = secured(create_app({"EVENTSVC_ENV": "development", "SECRET_KEY": "x" * 40,
                              "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'dev.sqlite3'}",
                              "INSTANCE_DIR": str(tmp_path), "DEVMAIL_DIR": str(tmp_path / "devmail"),
                              "RATELIMIT_ENABLED": False}))
    with serving(app) as base, chromium_page() as page:
        page.goto(f"{base}/dev/mail/20240101T000000-1.eml")
        frame = page.frame_locator("iframe.devmail-html")
        assert frame.locator("#p").inner_text() == "Hallo"
        assert frame.locator("#p").evaluate("e => getComputedStyle(e).color") == "rgb(11, 83, 148)"
        assert page.evaluate("getComputedStyle(document.querySelector('iframe')).minHeight") == "480px"
        assert frame.locator("body").evaluate("() => document.title") != "pwned"  # no scripts in the sandbox
        assert page.csp_violations == []


# ------------------------------------------------------------ rate limits

@limits_on(REGISTRATION_RATE_LIMIT="3 per minute")
def test_registration_posts_are_rate_limited_per_address(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    statuses = [post_form(client, event, csrf_token=token).status_code for _ in range(3)]
    assert statuses == [303, 303, 303]
    refused = post_form(client, event, csrf_token=token, email="late@example.org")
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert "Te veel verzoeken" in page and "Wacht even" in page
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["Content-Security-Policy"]  # the error page is a page like any other
    assert count(Registration, Registration.email_normalized == "late@example.org") == 0
    assert count(Registration) == 3
    # Reading the page is not limited, and another address has its own budget.
    assert client.get(f"/e/{event.slug}").status_code == 200
    other = client.post(f"/e/{event.slug}", data=form_data(client, event, csrf_token=token),
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 303


@limits_on(REGISTRATION_RATE_LIMIT="2 per minute", RATELIMIT_HEADERS_ENABLED=True)
def test_limited_posts_say_their_budget_and_reads_do_not(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    first = post_form(client, event, csrf_token=token)
    window_started_by = time.time()  # the minute's window began before this
    assert first.status_code == 303
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == ("2", "1")
    assert window_started_by + 60 <= int(first.headers["X-RateLimit-Reset"]) <= window_started_by + 62
    assert "Retry-After" not in first.headers  # on a redirect it would ask the browser to wait
    page = client.get(f"/e/{event.slug}")
    assert page.status_code == 200 and "X-RateLimit-Limit" not in page.headers
    second = post_form(client, event, csrf_token=token)
    assert second.headers["X-RateLimit-Remaining"] == "0"
    refused_at_the_earliest = time.time()
    refused = post_form(client, event, csrf_token=token)
    assert refused.status_code == 429 and refused.headers["X-RateLimit-Remaining"] == "0"
    # Waiting exactly as long as asked ends the window: rounded up, never down.
    assert window_started_by + 60 <= refused_at_the_earliest + int(refused.headers["Retry-After"])
    assert int(refused.headers["Retry-After"]) <= 62
    assert refused.headers["X-RateLimit-Reset"] == first.headers["X-RateLimit-Reset"]


@limits_on(REGISTRATION_RATE_LIMIT="3 per hour; 1 per second")
def test_a_refused_post_does_not_spend_the_larger_windows_budget(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")

    def post():
        response = post_form(client, event, csrf_token=token)
        return response.status_code, response.headers.get("X-RateLimit-Limit")

    assert post() == (303, "1")  # the smallest window is the one reported
    assert post() == (429, "1")  # refused by the second's limit: the hour's counter stays at 1
    time.sleep(1.1)
    assert post() == (303, "1")
    time.sleep(1.1)
    assert post() == (303, "1")  # the hour's third: had the refusal counted, this would be refused
    time.sleep(1.1)
    assert post() == (429, "3")  # now the hour's limit refuses, and says so
    assert count(Registration) == 3


@limits_on(REGISTRATION_RATE_LIMIT="2 per minute")
def test_the_form_and_the_api_share_one_budget_and_the_api_refuses_with_a_problem_document(client, make_event):
    event = make_event()
    path = f"/api/v1/events/{event.slug}/registrations"
    body = {"name": "Zoë de Vries", "email": "zoe@example.org", "consent": True}
    assert client.post(path, json=body).status_code == 201
    assert post_form(client, event).status_code == 303  # the budget's second registration
    refused = client.post(path, json={**body, "email": "late@example.org"})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["status"] == 429 and "Wacht even" in problem["detail"] and int(refused.headers["Retry-After"]) > 0
    assert post_form(client, event).status_code == 429
    assert count(Registration) == 2


@pytest.mark.parametrize("setting, value", [
    ("REGISTRATION_RATE_LIMIT", "lots"), ("REGISTRATION_RATE_LIMIT", "10 per fortnight"),
    ("LOGIN_RATE_LIMIT", "per minute 10"), ("RATELIMIT_STORAGE_URI", "redsi://127.0.0.1:6379/0")])
def test_a_rate_limit_setting_that_does_not_parse_stops_the_app_from_starting(database_url, setting, value):
    with pytest.raises(ValueError, match=setting):
        secured(create_app(test_config(database_url, RATELIMIT_ENABLED=True, **{setting: value})))


@limits_on(REGISTRATION_RATE_LIMIT="2 per minute")
def test_a_forged_forwarded_for_header_does_not_buy_a_new_budget(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    assert [post_form(client, event, csrf_token=token).status_code for _ in range(2)] == [303, 303]
    forged = client.post(f"/e/{event.slug}", data=form_data(client, event, csrf_token=token),
                         headers={"X-Forwarded-For": "203.0.113.99"})
    assert forged.status_code == 429


@limits_on(REGISTRATION_RATE_LIMIT="1 per minute", PROXY_FIX_HOPS=1)
def test_behind_a_trusted_proxy_each_client_has_its_own_budget(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")

    def post_from(address):
        return client.post(f"/e/{event.slug}", data=form_data(client, event, csrf_token=token),
                           headers={"X-Forwarded-For": address}).status_code

    assert [post_from("198.51.100.1"), post_from("198.51.100.2"), post_from("198.51.100.1")] == [303, 303, 429]


@limits_on(REGISTRATION_RATE_LIMIT="2 per minute")
def test_invalid_posts_count_towards_the_limit_too(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    assert [post_form(client, event, csrf_token=token, email="kapot").status_code for _ in range(2)] == [422, 422]
    assert post_form(client, event, csrf_token=token).status_code == 429
    assert count(Registration) == 0


@pytest.mark.parametrize("app_config", [{"RATELIMIT_ENABLED": False, "REGISTRATION_RATE_LIMIT": "1 per minute"}],
                         ids=["limits-off"])
def test_limits_are_off_when_disabled(client, make_event):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    assert [post_form(client, event, csrf_token=token).status_code for _ in range(4)] == [303] * 4


@limits_on(LOGIN_RATE_LIMIT="2 per minute")
def test_login_is_rate_limited(app, client):
    if "auth.login" not in app.view_functions:
        pytest.skip("no auth.login view yet")
    state = app.extensions[EXTENSION_KEY]
    assert "auth.login" in state.limited_endpoints
    with app.test_request_context():
        from flask import url_for

        path = url_for("auth.login")
    token = csrf_token(client, path)
    data = {"csrf_token": token, "email": "nobody@example.org", "username": "nobody", "password": "wrong"}
    statuses = [client.post(path, data=data).status_code for _ in range(3)]
    assert 429 not in statuses[:2] and statuses[2] == 429


def test_memory_limits_start_no_thread_per_hit_and_still_drop_old_counters(monkeypatch):
    from limits import parse
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    from eventsvc.ratelimit_storage import SweptMemoryStorage

    storage = storage_from_string("memory://")  # what RATELIMIT_STORAGE_URI's default gives
    assert isinstance(storage, SweptMemoryStorage)
    started = []
    monkeypatch.setattr(threading, "Timer", lambda *args, **kwargs: started.append(args))
    limiter, per_second = FixedWindowRateLimiter(storage), parse("2 per second")
    for address in range(20):
        assert limiter.hit(per_second, "register", f"10.0.0.{address}")
        time.sleep(0.011)  # longer than limits' own timer waits before it walks every counter
    assert started == []  # limits would have started a thread for (nearly) every hit
    assert limiter.hit(per_second, "register", "10.0.0.1") and not limiter.hit(per_second, "register", "10.0.0.1")
    assert len(storage.expirations) == 20
    time.sleep(1.05)  # every counter has expired; nobody asks for these addresses again
    storage._next_sweep = 0  # as if SWEEP_SECONDS had passed
    limiter.hit(per_second, "register", "192.0.2.1")
    assert list(storage.expirations) == [next(k for k in storage.storage if "192.0.2.1" in k)]
    monkeypatch.undo()  # a copy starts limits' one timer, as limits' own storage does
    copy = pickle.loads(pickle.dumps(storage))  # as limits' own storage allows
    assert isinstance(copy, SweptMemoryStorage) and copy.storage == storage.storage


def test_every_listed_endpoint_that_exists_is_limited(app):
    """Guards the wiring order: init_security must run after the blueprints are registered."""
    state = app.extensions[EXTENSION_KEY]
    assert state.limited_endpoints == {e for e in RATE_LIMITED_ENDPOINTS if e in app.view_functions}
    assert "events.register" in state.limited_endpoints
    assert init_security(app) is state  # idempotent


def _redis_or_skip():
    try:
        import redis
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the redis package is needed for RATELIMIT_STORAGE_URI=redis://")
        pytest.skip("redis package not installed")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI and unreachable at {REDIS_URL}: {error}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}")
    return client


REDIS_PREFIX = f"eventsvc-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


REDIS_SETTINGS = {"RATELIMIT_STORAGE_URI": REDIS_URL, "REGISTRATION_RATE_LIMIT": "2 per minute",
                  "RATELIMIT_KEY_PREFIX": REDIS_PREFIX}


@limits_on(**REDIS_SETTINGS)
def test_rate_limits_in_redis_are_shared_between_processes(app, client, make_event, database_url):
    redis_client = _redis_or_skip()
    try:
        event = make_event()
        token = csrf_token(client, f"/e/{event.slug}")
        assert [post_form(client, event, csrf_token=token).status_code for _ in range(2)] == [303, 303]
        assert redis_client.keys(f"*{REDIS_PREFIX}*"), "the limits were not kept in Redis"
        # A second app (another gunicorn process) shares the same budget.
        other = secured(create_app(test_config(database_url, RATELIMIT_ENABLED=True, **REDIS_SETTINGS)))
        other_client = other.test_client()
        other_token = csrf_token(other_client, f"/e/{event.slug}")
        refused = other_client.post(f"/e/{event.slug}", data=form_data(other_client, event, csrf_token=other_token))
        assert refused.status_code == 429
        assert count(Registration) == 2
        with other.app_context():
            db.engine.dispose()
    finally:
        for key in redis_client.scan_iter(f"*{REDIS_PREFIX}*"):
            redis_client.delete(key)


@limits_on(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", REGISTRATION_RATE_LIMIT="2 per minute")
def test_unreachable_limit_storage_never_breaks_registration(client, make_event):
    pytest.importorskip("redis")
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    # Falls back to per-process memory limits: registration works, the limit still holds.
    assert [post_form(client, event, csrf_token=token).status_code for _ in range(3)] == [303, 303, 429]
    assert count(Registration) == 2


@contextlib.contextmanager
def redis_server(port, tmp_path):
    """A redis-server of the test's own on `port`, keeping nothing on disk; stopped by its PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is needed to restart a rate-limit storage")
        pytest.skip("redis-server not installed")
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_rate_limits_go_back_to_redis_once_it_is_back(make_event, database_url, tmp_path, monkeypatch):
    redis = pytest.importorskip("redis")
    from eventsvc import ratelimit

    monkeypatch.setattr(ratelimit, "STORAGE_RETRY_SECONDS", 0)  # ask again on every post
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = secured(create_app(test_config(database_url, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=url,
                                         REGISTRATION_RATE_LIMIT="3 per minute")))
    client = app.test_client()
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")

    def post():
        return client.post(f"/e/{event.slug}", data=form_data(client, event, csrf_token=token)).status_code

    def counters():
        with redis.Redis.from_url(url) as server:
            return [int(server.get(key)) for key in server.keys("*")]

    try:
        with redis_server(port, tmp_path):
            assert post() == 303 and counters() == [1]
        # Redis is down: the posts are counted in process memory, and nobody is refused because of it.
        assert [post(), post()] == [303, 303]
        with redis_server(port, tmp_path):  # back, empty (it keeps nothing on disk)
            assert post() == 303 and counters() == [1]  # counted in Redis again
            assert [post(), post(), post()] == [303, 303, 429]
            assert counters() == [4]
        assert count(Registration) == 6
    finally:
        with app.app_context():
            db.engine.dispose()


@limits_on(REGISTRATION_RATE_LIMIT="2 per minute")
def test_a_redis_that_never_answers_holds_no_post(app, client, make_event, monkeypatch):
    """A Redis host gone from the network accepts nothing and answers nothing; the post must not wait for it."""
    pytest.importorskip("redis")
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes connections; nobody reads or answers
    state = app.extensions[EXTENSION_KEY]
    from limits.storage import storage_from_string

    from eventsvc.ratelimit import storage_options

    uri = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    monkeypatch.setattr(state.limiter, "_storage", storage_from_string(uri, **storage_options(uri, app.config)))
    pool = ThreadPoolExecutor(1)
    try:
        posts = pool.submit(lambda: [post_form(client, event, csrf_token=token).status_code for _ in range(3)])
        assert posts.result(timeout=30) == [303, 303, 429]  # counted in memory, the limit still holds
    finally:
        silent.close()  # a post still waiting (without the timeouts) gets its connection reset
        pool.shutdown(wait=True)
    assert count(Registration) == 2


def test_redis_gets_timeouts_unless_the_options_say_otherwise():
    from eventsvc.ratelimit import storage_options

    assert storage_options("redis://h:6379/0", {}) == {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    assert storage_options("rediss://h/0", {"RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 3}})["socket_timeout"] == 3
    assert storage_options("memory://", {}) == {}


@limits_on(REGISTRATION_RATE_LIMIT="1 per minute")
def test_the_storage_coming_back_while_another_thread_counts_breaks_no_post(app, client, make_event, monkeypatch):
    # The probing thread clears the failure time between another thread's two reads of it.
    from eventsvc import ratelimit

    limiter = app.extensions[EXTENSION_KEY].limiter
    monkeypatch.setattr(limiter, "_storage_failed_at", time.monotonic() - 1)
    real_monotonic = time.monotonic

    def monotonic():
        limiter._storage_failed_at = None  # what the probe does when the storage answers again
        return real_monotonic()

    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=monotonic, time=time.time))
    event = make_event()
    assert post_form(client, event).status_code == 303


@limits_on(REGISTRATION_RATE_LIMIT="1 per minute")
def test_a_limit_changed_at_run_time_to_nonsense_refuses_nobody(app, client, make_event, caplog):
    event = make_event()
    token = csrf_token(client, f"/e/{event.slug}")
    app.config["REGISTRATION_RATE_LIMIT"] = "lots"
    assert [post_form(client, event, csrf_token=token).status_code for _ in range(2)] == [303, 303]
    assert "REGISTRATION_RATE_LIMIT='lots' is not a rate limit" in caplog.text


# ------------------------------------------------------ per-address cap

@pytest.mark.parametrize("app_config", [{**LIMITS_OFF, "REGISTRATIONS_PER_ADDRESS_PER_HOUR": 3}], ids=["cap-3"])
def test_per_address_cap_counts_the_last_hour_across_events(app, make_event, register, now):
    events = [make_event() for _ in range(4)]
    register(events[0], email="old@example.org", now=now - timedelta(minutes=90))
    for event, minutes in zip(events[1:], (50, 40, 30)):
        register(event, email="Busy@Example.org", now=now - timedelta(minutes=minutes))
    assert registrations_per_address_allowed("busy@example.org", now) is False
    assert registrations_per_address_allowed("busy@example.org", now + timedelta(minutes=11)) is True
    assert registrations_per_address_allowed("old@example.org", now) is True
    assert registrations_per_address_allowed("someone@example.org", now) is True
    app.config["REGISTRATIONS_PER_ADDRESS_PER_HOUR"] = 0  # 0 switches the cap off
    assert registrations_per_address_allowed("busy@example.org", now) is True


@pytest.mark.parametrize("app_config", [{**LIMITS_OFF, "REGISTRATIONS_PER_ADDRESS_PER_HOUR": 2}], ids=["cap-2"])
def test_per_address_cap_refuses_through_the_form(client, make_event):
    events = [make_event() for _ in range(3)]
    assert [post_form(client, e, email="veel@example.org").status_code for e in events[:2]] == [303, 303]
    refused = post_form(client, events[2], email="VEEL@example.org")
    assert refused.status_code == 422
    assert "afgelopen uur al veel aanmeldingen" in refused.get_data(as_text=True)
    assert count(Registration, Registration.email_normalized == "veel@example.org") == 2
    assert post_form(client, events[2], email="ander@example.org").status_code == 303


# --------------------------------------------------------------- honeypot

def test_honeypot_is_on_the_form_but_out_of_sight(client, make_event):
    event = make_event()
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    field = re.search(r'<input[^>]*name="website"[^>]*>', page)
    assert field, "no honeypot field"
    assert 'tabindex="-1"' in field.group() and 'autocomplete="off"' in field.group()
    assert "Laat dit veld leeg" in page
    assert re.search(r'class="[^"]*\bhp-field\b', page)


def test_filled_honeypot_pretends_success_and_writes_nothing(client, make_event):
    event = make_event()
    response = post_form(client, event, email="bot@example.org", website="https://spam.example")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Bedankt voor uw aanmelding" in page
    assert count(Registration) == 0 and count(Message) == 0
    # A person, who leaves it empty, is registered as usual.
    assert post_form(client, event, website="").status_code == 303
    assert count(Registration) == 1


# ------------------------------------------------------------ body size

def test_oversized_form_gets_413_and_writes_nothing(app, client, make_event):
    event = make_event()
    assert app.config["MAX_CONTENT_LENGTH"] == 256 * 1024
    response = post_form(client, event, name="A" * (300 * 1024))
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "Te veel gegevens" in page and "Maak de invoer korter" in page
    assert response.headers["Content-Security-Policy"]
    assert count(Registration) == 0 and count(Message) == 0


def test_oversized_upload_gets_413(client, make_event):
    event = make_event()
    data = form_data(client, event)
    upload = client.post(f"/e/{event.slug}", content_type="multipart/form-data",
                         data={**data, "bijlage": (io.BytesIO(b"x" * (300 * 1024)), "groot.txt")})
    assert upload.status_code == 413
    assert "Te veel gegevens" in upload.get_data(as_text=True)
    assert count(Registration) == 0


def chunked_post(client, path, body: bytes):
    """As gunicorn hands on a `Transfer-Encoding: chunked` body: no usable length, terminated stream."""
    return client.post(path, input_stream=io.BytesIO(body), content_type="application/x-www-form-urlencoded",
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_oversized_chunked_form_gets_413_not_a_truncated_parse(client, make_event):
    """Werkzeug alone would read the first 256 KiB of a chunked body and parse that."""
    event = make_event()
    data = form_data(client, event, email="chunked@example.org")
    padding = "&pad=" + "A" * (300 * 1024)
    body = (padding + "&" + "&".join(f"{k}={v}" for k, v in data.items())).encode()
    response = chunked_post(client, f"/e/{event.slug}", body)
    assert response.status_code == 413
    assert "Te veel gegevens" in response.get_data(as_text=True)
    assert count(Registration) == 0
    small = ("&".join(f"{k}={v}" for k, v in data.items())).encode()
    assert chunked_post(client, f"/e/{event.slug}", small).status_code == 303
    assert count(Registration, Registration.email_normalized == "chunked@example.org") == 1


@pytest.mark.slow
def test_gunicorn_refuses_oversized_chunked_bodies(tmp_path):
    """The same through a real gunicorn and a raw chunked request."""
    import socket
    import subprocess
    import sys
    import time

    (tmp_path / "bodyapp.py").write_text(
        "from flask import Flask, request\n"
        "from eventsvc.security import BoundedChunkedBody\n"
        "app = Flask(__name__)\n"
        "app.config['MAX_CONTENT_LENGTH'] = 256 * 1024\n"
        "app.wsgi_app = BoundedChunkedBody(app.wsgi_app, app)\n"
        "@app.post('/')\n"
        "def index():\n"
        "    return f\"{len(request.form.get('name', ''))} {request.form.get('email')}\"\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "bodyapp:app"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def send(size):
        body = b"name=" + b"A" * size + b"&email=zoe@example.org"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for i in range(0, len(body), 8192):
                part = body[i:i + 8192]
                conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        return answer.split(b"\r\n", 1)[0], answer.rsplit(b"\r\n\r\n", 1)[-1]

    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        status, _ = send(300 * 1024)
        assert b" 413 " in status
        status, body = send(100 * 1024)
        assert b" 200 " in status and body == b"102400 zoe@example.org"
    finally:
        server.terminate()
        server.wait(10)


def test_large_but_allowed_form_is_refused_politely(client, make_event):
    event = make_event()
    response = post_form(client, event, name="A" * (200 * 1024))
    assert response.status_code == 422
    assert "Uw naam mag hoogstens 200 tekens lang zijn." in response.get_data(as_text=True)
    assert count(Registration) == 0


# ---------------------------------------------- hostile form input (Hypothesis)

FORM_XSS = [
    "<script>alert(1)</script>", "<SCRIPT SRC=//evil.example/x.js></SCRIPT>", "\"><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>", "<svg/onload=alert(1)>", "javascript:alert(1)", "'--><script>x</script>",
    "</title><script>alert(1)</script>", "{{ 7*7 }}", "{% print 7*7 %}", "${7*7}", "%(title)s",
    "=HYPERLINK(\"https://evil.example\")", "\u202eevil", "<scr\x00ipt>alert(1)</scr\x00ipt>",
]
CONTROL = st.sampled_from(["\r\n", "\n", "\r", "\x00", "\x0b", "\x1b", "\x7f", "\u2028", "\u2029", "\x85", "\t"])
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
HUGE = st.builds(lambda ch, n: ch * n, st.sampled_from(["A", "é", "<", "\x00", "😀"]),
                 st.integers(min_value=201, max_value=40_000))
FIELD = st.one_of(
    st.just("Zoë de Vries"), ANY_TEXT, st.sampled_from(FORM_XSS), HUGE,
    st.builds(lambda a, c, b: a + c + b, ANY_TEXT, CONTROL, st.sampled_from(FORM_XSS + ["Bcc: x@evil.example"])),
)
EMAIL = st.one_of(
    st.just(None),  # a fresh valid address
    st.builds(lambda c: f"x@example.org{c}Bcc: victim@evil.example", CONTROL),
    st.builds(lambda p: f"{p}@example.org", st.sampled_from(FORM_XSS)),
    FIELD,
)


def test_control_characters_are_exactly_the_unicode_categories_cc_cs_zl_and_zp():
    # has_control_characters scans with one regular expression; it must refuse exactly the
    # code points these categories hold in this Python's Unicode database.
    import sys
    import unicodedata

    from eventsvc.validators import has_control_characters

    refused = {cp for cp in range(sys.maxunicode + 1) if has_control_characters(chr(cp))}
    assert refused == {cp for cp in range(sys.maxunicode + 1)
                       if unicodedata.category(chr(cp)) in ("Cc", "Cs", "Zl", "Zp")}
    assert has_control_characters("Zoë\r\nBcc: x") and not has_control_characters("Zoë de Vries 😀")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=FIELD, email=EMAIL, organisation=FIELD, role=FIELD, consent=st.booleans())
def test_hostile_form_input_never_breaks_or_half_writes(client, make_event, name, email, organisation,
                                                       role, consent):
    event = make_event()
    event_id, slug = event.id, event.slug
    email = email if email is not None else f"  Fresh-{uuid.uuid4().hex}@Example.org "
    data = {"csrf_token": csrf_token(client, f"/e/{slug}"), "name": name, "email": email,
            "organisation": organisation, "role": role}
    if consent:
        data["consent"] = "y"
    rows_before = count(Registration, Registration.event_id == event_id)
    messages_before = count(Message)

    response = client.post(f"/e/{slug}", data=data)

    assert response.status_code in (303, 413, 422), response.status_code
    db.session.expire_all()
    rows_after = count(Registration, Registration.event_id == event_id)
    assert rows_after in (rows_before, rows_before + 1)
    pages = [response.get_data(as_text=True)]
    if response.status_code != 303:
        assert rows_after == rows_before and count(Message) == messages_before
    else:
        pages.append(client.get(response.headers["Location"]).get_data(as_text=True))
        key = email.strip().lower()
        row = db.session.scalar(select(Registration).where(Registration.event_id == event_id,
                                                           Registration.email_normalized == key))
        assert row is not None  # new, or the repeat of an earlier example
        if rows_after == rows_before + 1:
            # One complete row, exactly as entered (trimmed), with its one notice.
            assert (row.name, row.email, row.organisation, row.role) == \
                (name.strip(), email.strip(), organisation.strip(), role.strip())
            assert row.status in ("confirmed", "waitlisted") and row.token and row.consent_at
            notices = db.session.scalars(select(Message).where(Message.registration_id == row.id)).all()
            kinds = [m.kind for m in notices]
            assert kinds.count("confirmation") == 1 and set(kinds) <= {"confirmation", "reminder", "day_before"}
            notices = [m for m in notices if m.kind == "confirmation"]
            pages.append(client.get(f"/r/{row.token}").get_data(as_text=True))
            _assert_clean_mail(notices[0])
    for page in pages:
        assert "<script" not in page.lower()
        assert _event_handler_attributes(page) == []


class _Attributes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.handlers = []

    def handle_starttag(self, tag, attrs):
        self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]


def _event_handler_attributes(page):
    parser = _Attributes()
    parser.feed(page)
    parser.close()
    return parser.handlers


def _assert_clean_mail(message):
    from eventsvc.outbox.mail import render

    import email
    import email.policy

    # Read the mail back as a receiver does, from the bytes that go over SMTP.
    mail = email.message_from_bytes(render(message).as_bytes(), policy=email.policy.default)
    for header, value in mail.items():
        assert "\r" not in str(value) and "\n" not in str(value), header
    html_part = mail.get_body(("html",)).get_content()
    assert "<script" not in html_part.lower()


def test_long_unicode_addresses_still_fit_once_normalised(client, make_event):
    """'İ'.lower() is two code points (the only character that grows). The address
    validator counts UTF-8 bytes (two for 'İ'), so a normalised address still fits
    the 254-character column; a longer one is refused, never a database error."""
    event = make_event()
    domain = "@" + ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 3]) + ".nl"
    longest = "İ" * 30 + domain
    accepted = post_form(client, event, email=longest)
    assert accepted.status_code == 303
    stored = db.session.scalar(select(Registration.email_normalized))
    assert len(stored) == 250 and stored == longest.lower()
    refused = post_form(client, event, email="İ" * 40 + domain)
    assert refused.status_code == 422
    assert "Vul een geldig e-mailadres in" in refused.get_data(as_text=True)
    assert count(Registration) == 1


# --------------------------------------------------------- Markdown / XSS

MARKDOWN_XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<a href=\"javascript:alert(1)\">klik</a>",
    "[klik](javascript:alert(1))",
    "[klik](JaVaScRiPt:alert(1))",
    "[klik](javascript&#58;alert(1))",
    "[klik](&#106;avascript:alert(1))",
    "[klik](java\tscript:alert(1))",
    "[klik](%6Aavascript:alert(1))",
    "[klik](vbscript:msgbox(1))",
    "[klik](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[klik](file:///etc/passwd)",
    "![plaatje](javascript:alert(1))",
    "![plaatje](https://evil.example/x.png\" onerror=\"alert(1))",
    "[klik](https://example.org \"titel\\\" onmouseover=\\\"alert(1)\")",
    "[klik][ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "<https://example.org/\" onclick=\"alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<style>body{display:none}</style>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<object data=\"https://evil.example/x.swf\"></object>",
    "<embed src=\"https://evil.example/x.swf\">",
    "<base href=\"https://evil.example/\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">",
    "<link rel=\"stylesheet\" href=\"https://evil.example/x.css\">",
    "<form action=\"https://evil.example\"><input name=x></form>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<!--<img src=x onerror=alert(1)>-->",
    "<<script>script>alert(1)<</script>/script>",
    "`<script>alert(1)</script>`",
    "```\n<script>alert(1)</script>\n```",
    "<a href=\"https://example.org\" target=\"_blank\" onclick=\"alert(1)\">x</a>",
    "<a href=\"java&#x0A;script:alert(1)\">x</a>",
    "[x](\x01javascript:alert(1))",
    "<scr<script>ipt>alert(1)</script>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
]
ALLOWED_TAGS = {"p", "br", "strong", "em", "a", "ul", "ol", "li", "blockquote", "code", "pre", "h2", "h3",
                "h4", "hr"}
SAFE_SCHEMES = {"", "http", "https", "mailto"}


class _Audit(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "src", "srcdoc", "formaction", "action"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href":
                target = re.sub(r"[\x00-\x20]", "", html.unescape(value or ""))
                if urlsplit(target).scheme.lower() not in SAFE_SCHEMES:
                    self.problems.append(f"href {value!r}")
            if name not in ("href", "title", "rel"):
                self.problems.append(f"attribute {name} on <{tag}>")
        if tag == "a" and "noopener" not in (dict(attrs).get("rel") or ""):
            self.problems.append("link without rel=noopener")

    handle_startendtag = handle_starttag


def _audit(rendered):
    audit = _Audit()
    audit.feed(str(rendered))
    audit.close()
    return audit.problems


@pytest.mark.parametrize("payload", MARKDOWN_XSS)
def test_markdown_descriptions_are_sanitised(payload):
    rendered = str(render_markdown(payload))
    assert _audit(rendered) == [], rendered
    lowered = rendered.lower()  # what is left of a payload is escaped text, never markup
    assert "<script" not in lowered and "<img" not in lowered and "<iframe" not in lowered


def test_markdown_keeps_what_organisers_need():
    rendered = str(render_markdown("## Programma\n\n- **Welkom**\n- [Agenda](https://example.org/a?x=1&y=2)\n"
                                   "\nMail [ons](mailto:info@example.org)."))
    assert "<h2>Programma</h2>" in rendered and "<strong>Welkom</strong>" in rendered
    assert 'href="https://example.org/a?x=1&amp;y=2"' in rendered and 'href="mailto:info@example.org"' in rendered


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(exclude_categories=("Cs",)),
                                  st.sampled_from(list("<>\"'`[]()!&#;:/=\n"))), max_size=400)
       | st.builds(lambda a, b: a + b, st.sampled_from(MARKDOWN_XSS), st.text(max_size=50)))
def test_markdown_output_is_always_safe(text):
    assert _audit(render_markdown(text)) == []
