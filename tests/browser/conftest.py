"""Browser tests: the real app on a real HTTP server, a real outbox worker and
SMTP sink, driven through Debian's Chromium with Playwright.

One server for the browser tests (SQLite only, to keep the suite fast; the PostgreSQL paths
are covered by the rest of the suite). Every test gets a fresh browser context
(no cookies, Dutch Accept-Language) and makes its own events, so tests do not
depend on each other's order. Every wait is bounded.

Artefacts (git-ignored) under test-artifacts/:
  screenshots/<page>-<lang>.png   key pages, for people to look at
  axe/<page>-<lang>.json          the full axe-core result of each checked page
  failures/<test>.png             the page as it was when a test failed
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from flask import got_request_exception

from eventsvc import create_app
from eventsvc.extensions import db

from ..conftest import _migrate, test_config

PROJECT_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_DIR / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_RESULTS = ARTIFACTS / "axe"
FAILURES = ARTIFACTS / "failures"
AXE_JS = PROJECT_DIR / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

TIMEOUT_MS = 10_000  # every Playwright wait (clicks, expect, navigation) gives up after this
MAIL_TIMEOUT_S = 15  # the worker polls every 0.2 s; a mail that takes longer is a failure

ORGANISER_EMAIL, ORGANISER_NAME = "organisator@example.org", "Mieke van den Berg"
ORGANISER_PASSWORD = "browser-tests-password"

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)  # the page fixture keeps a screenshot of failures
    return report


def _missing(what):
    """Fail loudly in CI, skip on a laptop that lacks the tool."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


# -- the app, its server, worker and mail sink ---------------------------------------------

class LiveApp:
    """The running service as a test sees it: its URL, its mailbox, its database."""

    def __init__(self, app, url, sink):
        self.app, self.url, self.sink = app, url, sink
        self.errors: list[str] = []  # exceptions raised by views or the worker
        self._serial = 0

    def make_event(self, **fields):
        """A published event like the demo's online session; returns (slug, id)."""
        from eventsvc.demo import ONLINE_DESCRIPTION
        from eventsvc.events.models import Event
        from eventsvc.types import utcnow

        self._serial += 1
        starts_at = (utcnow() + timedelta(days=21)).replace(hour=10, minute=45, second=0, microsecond=0)
        values = dict(
            slug=f"samen-onderwijs-versnellen-{self._serial}", title="Samen onderwijs versnellen",
            summary="Online bijeenkomst voor schoolbestuurders en gemeentelijke beleidsadviseurs "
                    "in het primair onderwijs.",
            description=ONLINE_DESCRIPTION,
            audience="Schoolbestuurders en gemeentelijke beleidsadviseurs in het primair onderwijs",
            region="Landelijk", organised_by="De alliantie van Sardes, CAOP en Kennisland",
            contact_name="Mieke van den Berg", contact_email="mieke.vandenberg@example.org",
            mode="online", location="", join_url="https://meet.example.org/samen-onderwijs-versnellen",
            timezone="Europe/Amsterdam", starts_at=starts_at, ends_at=starts_at + timedelta(minutes=75),
            status="published", capacity=None)
        values.update(fields)
        with self.app.app_context():
            event = Event(**values)
            db.session.add(event)
            db.session.commit()
            result = event.slug, event.id
            db.session.remove()
        return result

    def register(self, slug, email, name="Eerder Aangemeld"):
        """Register through the service, as the form does (to fill a seat)."""
        from sqlalchemy import select

        from eventsvc.events.models import Event
        from eventsvc.registrations.services import register

        with self.app.app_context():
            event = db.session.scalar(select(Event).where(Event.slug == slug))
            status = register(event, name=name, email=email, locale="nl").registration.status
            db.session.remove()
        return status

    def mails_to(self, address, count=1, subject_contains="", timeout=MAIL_TIMEOUT_S):
        """Wait (bounded) until `count` mails to `address` arrived; return them, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m.message for m in list(self.sink.messages)
                     if address in [r.lower() for r in m.rcpt_tos]
                     and subject_contains in str(m.message["Subject"])]
            if len(found) >= count:
                return found
            if self.errors or time.monotonic() > deadline:
                subjects = [f"{m.message['Subject']!r} to {m.rcpt_tos}" for m in self.sink.messages]
                raise AssertionError(
                    f"expected {count} mail(s) to {address} with {subject_contains!r} in the subject "
                    f"within {timeout}s; the sink has: {subjects}; errors: {self.errors}")
            time.sleep(0.1)


def _deliver_until_stopped(app, stop, errors):
    """The outbox worker, as `flask worker` runs it, in a thread (signals are for the main thread,
    so this loops over run_once instead of run_forever)."""
    from eventsvc.outbox.worker import Worker

    with app.app_context():
        worker = Worker(idle_seconds=0.2)
        while not stop.is_set():
            try:
                worker.run_once()
            except Exception as error:  # noqa: BLE001  (reported to the tests, which then fail)
                log.exception("worker failed")
                errors.append(f"worker: {error!r}")
                db.session.rollback()
            stop.wait(0.2)
        db.session.remove()


# Package scope (not session): the server and Playwright stop when the last browser test has run,
# so other tests may start Playwright's sync API themselves (two cannot run at once in one thread).
@pytest.fixture(scope="package")
def live(tmp_path_factory):
    from werkzeug.serving import make_server

    from eventsvc.auth.services import create_organiser
    from eventsvc.demo import create_demo_data
    from eventsvc.devmail.sink import MailSink

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'browser.sqlite3'}"
    _migrate(url)
    sink = MailSink().start()
    app = create_app(test_config(
        url, MAIL_PORT=sink.port, RATELIMIT_ENABLED=False,
        INSTANCE_DIR=str(tmp_path_factory.mktemp("browser-instance"))))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    app.config["BASE_URL"] = base_url  # links in mails point at this server
    live_app = LiveApp(app, base_url, sink)

    def record(sender, exception, **extra):
        live_app.errors.append(f"view: {exception!r}")
    got_request_exception.connect(record, app)

    with app.app_context():
        create_demo_data()
        create_organiser(ORGANISER_EMAIL, ORGANISER_NAME, ORGANISER_PASSWORD)
        db.session.remove()

    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                               name="browser-tests-server", daemon=True)
    stop = threading.Event()
    delivering = threading.Thread(target=_deliver_until_stopped, args=(app, stop, live_app.errors),
                                  name="browser-tests-worker", daemon=True)
    serving.start()
    delivering.start()
    try:
        yield live_app
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        delivering.join(timeout=10)
        serving.join(timeout=10)
        sink.stop()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(autouse=True)
def no_server_errors(request):
    """A view or the worker raising is a failure of the test that caused it."""
    if "live" not in request.fixturenames:
        yield
        return
    live_app = request.getfixturevalue("live")
    live_app.errors.clear()
    yield
    assert not live_app.errors, f"the app raised: {live_app.errors}"


# -- the browser ----------------------------------------------------------------------------

@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(FAILURES, ignore_errors=True)  # only this run's failures are kept
    expect.set_options(timeout=TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                              timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def new_page(browser, live, request):
    """Open pages in fresh browser contexts: new_page(locale="en-GB", width=390)."""
    contexts = []

    def open_page(locale="nl-NL", width=1280, height=900):
        context = browser.new_context(
            base_url=live.url, locale=locale, viewport={"width": width, "height": height},
            bypass_csp=True,  # lets the tests inject axe-core whatever the page's CSP says
            accept_downloads=False, timezone_id="Europe/Amsterdam")
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    for n, context in enumerate(contexts):
        if failed:
            for m, page in enumerate(context.pages):
                FAILURES.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^\w.-]+", "_", request.node.name)
                try:
                    page.screenshot(path=str(FAILURES / f"{name}-{n}-{m}.png"), full_page=True, timeout=5_000)
                except Exception:  # noqa: BLE001  (a screenshot must not hide the real failure)
                    pass
        context.close()


@pytest.fixture
def page(new_page):
    """A Dutch-speaking visitor on a desktop screen."""
    return new_page()


# -- helpers for the tests ------------------------------------------------------------------

def page_lang(page) -> str:
    return page.evaluate("document.documentElement.lang") or "xx"


def screenshot(page, name, phone=True):
    """Save the whole page as test-artifacts/screenshots/<name>-<lang>.png, and as it looks
    on a phone (390 px wide) as <name>-phone-<lang>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    lang = page_lang(page)
    path = SCREENSHOTS / f"{name}-{lang}.png"
    page.screenshot(path=str(path), full_page=True)
    if phone:
        size = page.viewport_size
        page.set_viewport_size({"width": 390, "height": 844})
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}-phone-{lang}.png"), full_page=True)
        finally:
            page.set_viewport_size(size)
    return path


def assert_accessible(page, name):
    """Run axe-core on the page; fail on serious or critical violations, listed readably."""
    if not AXE_JS.exists():
        _missing(f"axe-core not found at {AXE_JS} (run `npm ci`)")
    page.add_script_tag(path=str(AXE_JS))
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    AXE_RESULTS.mkdir(parents=True, exist_ok=True)
    (AXE_RESULTS / f"{name}-{page_lang(page)}.json").write_text(
        json.dumps({"url": results.get("url"), "violations": results["violations"],
                    "passes": len(results.get("passes", [])), "incomplete": [
                        {"id": r["id"], "impact": r.get("impact"), "nodes": len(r["nodes"])}
                        for r in results.get("incomplete", [])]}, indent=2, ensure_ascii=False))
    bad = [v for v in results["violations"] if v.get("impact") in ("serious", "critical")]
    if bad:
        lines = [f"axe-core: {len(bad)} serious/critical violation(s) on {name} ({page.url}):"]
        for v in bad:
            lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
            for node in v["nodes"][:5]:
                lines.append(f"    at {', '.join(map(str, node['target']))}: {node['html'][:200]}")
                for summary_line in (node.get("failureSummary") or "").splitlines():
                    lines.append(f"      {summary_line.strip()}")
            if len(v["nodes"]) > 5:
                lines.append(f"    … and {len(v['nodes']) - 5} more element(s)")
        pytest.fail("\n".join(lines), pytrace=False)
    return results


def log_in(page, email=ORGANISER_EMAIL, password=ORGANISER_PASSWORD, next_path=None):
    page.goto("/inloggen" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label(re.compile("^(E-mailadres|Email address)")).fill(email)
    page.get_by_label(re.compile("^(Wachtwoord|Password)")).fill(password)
    page.get_by_role("button", name=re.compile("^(Inloggen|Log in)$")).click()
