"""Faults survived by the running system (issue 8, item 1).

Real processes (gunicorn, `flask --app wsgi worker`), a real SMTP server
(MailSink) and the real databases. Every test is bounded in time and stops
every process it started by PID (the `processes` fixture).
"""
import contextlib
import itertools
import os
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from eventsvc.events.management import reschedule_event
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration, new_token
from eventsvc.types import utcnow

from .conftest import admin_connection
from .processes import (FormClient, Processes, as_header, csrf_token_in, free_port, message_ids, register_many,
                        registration_form, service_env, wait_until, worker_totals)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes(tmp_path):
    """Processes this test starts; every one still running is stopped by PID at teardown."""
    with Processes(tmp_path / "logs") as procs:
        yield procs


def fresh(statement):
    """Run a read in a new transaction, so the test sees what other processes committed."""
    db.session.rollback()
    return db.session.execute(statement)


def count_messages(*where) -> int:
    return fresh(select(func.count()).select_from(Message).where(*where)).scalar_one()


def bulk_registrants(event: Event, n: int, *, status="confirmed", extra_emails=()) -> list[int]:
    """n registrations (then one per extra address) written straight into the table, seats counted."""
    now = utcnow()
    emails = [f"bulk{i}@example.org" for i in range(n)] + list(extra_emails)
    rows = [dict(event_id=event.id, name=f"Deelnemer {i}", email=email, email_normalized=email.lower(),
                 organisation="", role="", status=status, token=new_token(), locale="nl",
                 registered_at=now, consent_at=now)
            for i, email in enumerate(emails)]
    db.session.execute(insert(Registration), rows)
    if status == "confirmed":
        db.session.execute(update(Event).where(Event.id == event.id)
                           .values(confirmed_count=Event.confirmed_count + len(rows)))
    db.session.commit()
    return list(fresh(select(Registration.id).where(Registration.event_id == event.id)).scalars())


def fan_out(event: Event) -> int:
    """Reschedule `event` a day later: one `rescheduled` notice per registrant, one transaction."""
    db.session.refresh(event)
    return reschedule_event(event, starts_at=event.starts_at + timedelta(days=1),
                            ends_at=event.ends_at + timedelta(days=1), reason="De zaal is niet beschikbaar")


# --- 1. 200 people at once for 50 places, through the HTTP server ----------------------------------

def test_200_concurrent_registrations_through_gunicorn_for_50_places(app, database_url, make_event, processes):
    event = make_event(capacity=50)
    web = processes.gunicorn(service_env(database_url), workers=2, threads=4)

    started = time.monotonic()
    responses = register_many([web.url], event.slug, range(200), concurrency=32)
    elapsed = time.monotonic() - started

    problems = {n: r if isinstance(r, Exception) else (r.status_code, r.text[:300])
                for n, r in responses.items() if isinstance(r, Exception) or r.status_code != 303}
    assert not problems, f"{len(problems)} registrations did not succeed: {list(problems.items())[:5]}"
    print(f"\n200 registrations through gunicorn in {elapsed:.1f} s")

    statuses = dict(fresh(select(Registration.status, func.count()).group_by(Registration.status)).all())
    assert statuses == {"confirmed": 50, "waitlisted": 150}
    assert fresh(select(Event.confirmed_count).where(Event.id == event.id)).scalar_one() == 50
    # Exactly one notice per registration, and the one that matches its state.
    notices = fresh(select(Registration.status, Message.kind, func.count(Message.id))
                    .join(Message, Message.registration_id == Registration.id)
                    .where(Message.kind.in_(("confirmation", "waitlisted")))
                    .group_by(Registration.id, Registration.status, Message.kind)).all()
    assert len(notices) == 200
    assert all(n == 1 for _, _, n in notices)
    assert Counter((status, kind) for status, kind, _ in notices) == {
        ("confirmed", "confirmation"): 50, ("waitlisted", "waitlisted"): 150}
    assert web.alive()
    assert "Traceback" not in web.output()


# --- 2. A worker killed with SIGKILL in the middle of 2,000 notices ----------------------------------

# PostgreSQL (where several workers share the queue) gets the full 2,000; SQLite, the same lease
# code with one worker, a smaller queue to keep the suite short (rendering costs ~30 ms a mail).
KILL_TEST_NOTICES = {"postgresql": 2000, "sqlite": 300}
# A 3-second lease keeps the test short; a batch must be sent well within its lease (see
# test_a_worker_whose_lease_ran_out_does_not_send_what_another_worker_took_over), so batches of 10.
BATCH_SIZE, LEASE_SECONDS = 10, 3


def test_worker_killed_mid_delivery_loses_nothing_and_duplicates_at_most_one_batch(
        app, backend, database_url, make_event, processes):
    from eventsvc.devmail.sink import MailSink

    notices = KILL_TEST_NOTICES[backend]
    kill_after = notices // 5 + BATCH_SIZE // 2  # "some hundreds" of the 2,000, in the middle of a batch
    event = make_event()
    bulk_registrants(event, notices)
    assert fan_out(event) == notices
    rescheduled = Message.kind == "rescheduled"
    expected = {as_header(mid) for mid in fresh(select(Message.message_id).where(rescheduled)).scalars()}
    assert len(expected) == notices

    with MailSink() as sink:
        env = service_env(database_url, mail_port=sink.port, OUTBOX_LEASE_SECONDS=LEASE_SECONDS,
                          OUTBOX_BATCH_SIZE=BATCH_SIZE)
        worker_a = processes.worker(env, "--idle-seconds", "0.2", name="worker-a")
        wait_until(lambda: sink.count >= kill_after or not worker_a.alive(), timeout=90, interval=0.005,
                   what=f"worker A to deliver {kill_after}")
        assert worker_a.alive(), worker_a.tail()
        worker_a.kill()  # SIGKILL: no clean-up, its leased rows stay locked until the lease runs out
        received_before_kill = sink.count
        in_flight = count_messages(rescheduled, Message.status == "pending", Message.locked_by.is_not(None))
        assert 0 < received_before_kill < notices
        assert in_flight <= BATCH_SIZE

        # The rest, and A's leased rows once the lease has run out: one new worker on SQLite,
        # two on PostgreSQL (they share the queue with SKIP LOCKED).
        started = time.monotonic()
        takers = [processes.worker(env, "--idle-seconds", "0.2", name=f"worker-b{i}")
                  for i in range(2 if backend == "postgresql" else 1)]
        wait_until(lambda: count_messages(rescheduled, Message.status != "sent") == 0
                   or not all(w.alive() for w in takers), timeout=300, interval=0.5,
                   what="the new worker(s) to deliver the rest")
        for worker in takers:
            assert worker.alive(), worker.tail()
            assert worker.stop(grace=20) == 0, worker.tail()
        took_over_after = time.monotonic() - started
        mails = list(sink.messages)

    statuses = dict(fresh(select(Message.status, func.count()).where(rescheduled).group_by(Message.status)).all())
    assert statuses == {"sent": notices}
    seen = Counter(mid.rsplit("@", 1)[0] for mid in message_ids(mails))
    assert set(seen) == expected, "a notice never reached the SMTP server"
    duplicates = sum(n - 1 for n in seen.values())
    print(f"\nSIGKILL after {received_before_kill} of {notices} mails ({in_flight} rows leased, "
          f"batch {BATCH_SIZE}); the rest took {took_over_after:.1f} s; "
          f"duplicates seen: {duplicates}; new workers {[worker_totals(w.output()) for w in takers]}")
    assert duplicates <= BATCH_SIZE
    assert len(mails) == notices + duplicates


# --- 3. The SMTP server unreachable, crashing, refusing (4xx) and rejecting (5xx) during a fan-out ----

FAN_OUT = 200
REFUSED = "onbekend@example.org"  # the server answers 550 for this mailbox


def _worker_warned(worker, times=1):
    return worker.output().count("unavailable") >= times


def test_smtp_outages_and_refusals_during_a_fan_out_lose_nothing(app, database_url, make_event, processes,
                                                                tmp_path):
    from eventsvc.devmail.sink import MailSink

    event = make_event()
    bulk_registrants(event, FAN_OUT - 1, extra_emails=[REFUSED])  # the refused address comes last
    assert fan_out(event) == FAN_OUT
    rescheduled = Message.kind == "rescheduled"
    port = free_port()
    env = service_env(database_url, mail_port=port, OUTBOX_RETRY_BASE_SECONDS=1, OUTBOX_BATCH_SIZE=20,
                      MAIL_TIMEOUT=5)
    # Phase 1: no server at all. The worker backs off; no message spends an attempt.
    worker = processes.worker(env, "--idle-seconds", "0.2")
    wait_until(lambda: _worker_warned(worker) or not worker.alive(), timeout=30,
               what="the worker to find the server unreachable")
    assert worker.alive(), worker.tail()
    assert count_messages(rescheduled, Message.status == "pending", Message.attempts == 0) == FAN_OUT

    # Phase 2: a server that crashes (SIGKILL) in the middle of the fan-out.
    crash_dir = tmp_path / "crashed-sink"
    sink_process = processes.mail_sink(port, crash_dir)
    wait_until(lambda: len(list(crash_dir.glob("*.eml"))) >= 50, timeout=60, interval=0.02,
               what="the first server to receive 50 mails")
    sink_process.kill()
    warnings_so_far = worker.output().count("unavailable")
    wait_until(lambda: _worker_warned(worker, warnings_so_far + 1), timeout=30,
               what="the worker to notice the crash")
    time.sleep(1.0)  # down for a while

    # Phase 3: the server is back, but refuses some DATA for now (4xx), rejects one message for good
    # (5xx on DATA) and one mailbox (550 on RCPT).
    with MailSink(port=port) as sink:
        sink.fail_next_data.extend([(451, "4.3.0 Try again later")] * 3 + [(554, "5.6.0 Content refused")])
        sink.refuse_rcpt[REFUSED] = (550, "5.1.1 No such mailbox")
        wait_until(lambda: count_messages(rescheduled, Message.status == "pending") == 0 or not worker.alive(),
                   timeout=120, interval=0.25, what="every notice to be sent or failed")
        assert worker.alive(), worker.tail()
        worker.stop()
        mails = list(sink.messages)
    crashed_mails = list(crash_dir.glob("*.eml"))

    rows = fresh(select(Message.message_id, Message.status, Message.attempts, Message.last_error,
                        Registration.email).join(Registration).where(rescheduled)).all()
    by_status = Counter(row.status for row in rows)
    assert by_status == {"sent": FAN_OUT - 2, "failed": 2}, by_status
    failed = sorted((row.last_error or "")[:3] for row in rows if row.status == "failed")
    assert failed == ["550", "554"]
    assert [row.email for row in rows if (row.last_error or "").startswith("550")] == [REFUSED]
    # The 4xx refusals were retried after a back-off and then delivered.
    retried = [row for row in rows if row.status == "sent" and row.attempts > 1]
    assert 3 <= len(retried) <= 4, [(r.attempts, r.last_error) for r in rows if r.attempts > 1]
    # Outages cost no attempts, except the one message in hand when the server crashed.
    assert max(row.attempts for row in rows) <= 3
    # Every sent notice reached a server; a duplicate can only be the one in hand at the crash.
    received = Counter(mid.rsplit("@", 1)[0] for mid in
                       message_ids(mails) + message_ids(path.read_bytes() for path in crashed_mails))
    sent = {as_header(row.message_id) for row in rows if row.status == "sent"}
    assert set(received) == sent
    assert sum(n - 1 for n in received.values()) <= 1
    assert not any(REFUSED in m.rcpt_tos for m in mails)
    print(f"\nfan-out of {FAN_OUT}: {len(crashed_mails)} before the crash, {len(mails)} after; "
          f"retried {len(retried)}, failed {failed}, worker {worker_totals(worker.output())}")


# --- 4. PostgreSQL restarts under load ----------------------------------------------------------------

def _pg_ctl(action: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _pg_ready() -> bool:
    done = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "1"], capture_output=True,
                          timeout=10, stdin=subprocess.DEVNULL)
    return done.returncode == 0


class RegistrationLoad:
    """Threads that keep registering new people through the web server and record every answer."""

    def __init__(self, base_url: str, slug: str, threads: int = 4):
        self.base_url, self.slug, self.threads = base_url, slug, threads
        self.answers: list[tuple[float, int, str, str]] = []  # (time, status, email, body excerpt)
        self.errors: list[tuple[float, str]] = []
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with FormClient(self.base_url, timeout=15) as client:
            while not self._stop.is_set():
                with self._lock:
                    n = next(self._numbers)
                email = f"load{n}@example.org"
                try:
                    if client.token is None:
                        page = client.get(f"/e/{self.slug}")
                        if page.status_code != 200:
                            self._record(page, "(form)")
                            time.sleep(0.05)
                            continue
                        client.token = csrf_token_in(page.text)
                    answer = client.post_form(f"/e/{self.slug}", registration_form(n, email=email),
                                              token=client.token)
                    self._record(answer, email)
                except httpx.HTTPError as error:
                    with self._lock:
                        self.errors.append((time.monotonic(), f"{type(error).__name__}: {error}"))
                time.sleep(0.01)

    def _record(self, response, email):
        with self._lock:
            self.answers.append((time.monotonic(), response.status_code, email, response.text[:2000]))

    def successes_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for t, status, _, _ in self.answers if t >= moment and status == 303)

    def __enter__(self):
        for thread in self._workers:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._workers:
            thread.join(20)


@pytest.mark.pg_restart
def test_postgresql_restart_under_load_gives_503_then_recovers_without_half_written_rows(
        app, backend, database_url, make_event, processes):
    if backend != "postgresql":
        pytest.skip("restarts the PostgreSQL server")
    event = make_event(capacity=15)
    web = processes.gunicorn(service_env(database_url), workers=2)
    with RegistrationLoad(web.url, event.slug) as load:
        wait_until(lambda: load.successes_since(0) >= 5, timeout=30, what="registrations before the restart")
        db.session.remove()  # this test's own connection would die with the server
        stopped_at = time.monotonic()
        try:
            stop = _pg_ctl("stop", "-m", "fast")
            assert stop.returncode == 0, stop.stderr
            down_at = time.monotonic()  # start again at once: stopping and starting take ~2 + ~3 s,
            # and other tests share this server, so the outage stays at about 5 s
        finally:
            if not _pg_ready():
                start = _pg_ctl("start")
                assert start.returncode == 0 or _pg_ready(), start.stderr
            wait_until(_pg_ready, timeout=30, interval=0.1, what="pg_isready")
        back_at = time.monotonic()
        db.engine.dispose()
        wait_until(lambda: load.successes_since(back_at) >= 10, timeout=30,
                   what="registrations to succeed again without restarting gunicorn")
    outage = [a for a in load.answers if stopped_at <= a[0] <= back_at]
    statuses = Counter(status for _, status, _, _ in load.answers)
    print(f"\nPostgreSQL stopping {down_at - stopped_at:.1f} s, down until ready {back_at - down_at:.1f} s: "
          f"answers {dict(statuses)}, "
          f"transport errors {len(load.errors)}")
    assert 500 not in statuses, [body for _, status, _, body in load.answers if status == 500][:1]
    assert set(statuses) <= {303, 503}, statuses
    unavailable = [a for a in load.answers if a[1] == 503]
    assert unavailable and outage, "no request met the outage"
    assert all("Tijdelijk niet beschikbaar" in body for _, _, _, body in unavailable)
    assert not load.errors, load.errors[:3]
    # The same gunicorn workers served before and after: no crash, no restart.
    assert web.alive()
    assert web.output().count("Booting worker") == 2, web.tail()

    # Nothing half-written: every registration has exactly its one notice and the seat count is right.
    registered = {email for _, status, email, _ in load.answers if status == 303}
    rows = fresh(select(Registration.email, Registration.status).where(Registration.event_id == event.id)).all()
    assert registered <= {row.email for row in rows}
    attempted = {email for _, _, email, _ in load.answers}
    assert {row.email for row in rows} <= attempted
    confirmed = sum(1 for row in rows if row.status == "confirmed")
    assert fresh(select(Event.confirmed_count).where(Event.id == event.id)).scalar_one() == confirmed <= 15
    notices = dict(fresh(select(Registration.email, func.count(Message.id))
                         .outerjoin(Message, (Message.registration_id == Registration.id)
                                    & Message.kind.in_(("confirmation", "waitlisted")))
                         .where(Registration.event_id == event.id).group_by(Registration.email)).all())
    assert set(notices.values()) == {1}, {k: v for k, v in notices.items() if v != 1}


# --- Found while building the tests above -------------------------------------------------------------

def test_every_fan_out_notice_has_its_own_valid_message_id(app, make_event):
    """Invariant 3: a duplicate is recognisable by its Message-ID, so each row's must be unique
    and a valid msg-id (id-left "@" id-right). Mail clients (Gmail) also drop a second mail
    with a Message-ID they have seen: an ID shared by all fan-out notices loses mail."""
    from eventsvc.outbox.mail import render

    event = make_event()
    bulk_registrants(event, 3)
    assert fan_out(event) == 3
    db.session.rollback()
    messages = db.session.scalars(select(Message).where(Message.kind == "rescheduled")).all()
    headers = [message_ids([render(m).as_bytes()])[0] for m in messages]
    assert len(set(headers)) == 3, headers
    for header, message in zip(headers, messages):
        left, _, right = header.partition("@")
        assert left and right and "." in right, header
        assert left.replace(".", "").replace("-", "").isalnum() or left == message.message_id, header


def test_outbox_inserts_report_how_many_rows_they_wrote(app, make_event):
    """`enqueue` says whether it queued a row and a fan-out how many: on PostgreSQL too
    (SQLAlchemy reports rowcount -1 for an INSERT unless asked to preserve it)."""
    from eventsvc.extensions import db as _db
    from eventsvc.outbox.services import enqueue

    event = make_event()
    assert enqueue("custom", event=event, dedupe_key="custom:test:1") is True
    assert enqueue("custom", event=event, dedupe_key="custom:test:1") is False
    _db.session.commit()
    bulk_registrants(event, 4)
    assert fan_out(event) == 4


def test_a_worker_whose_lease_ran_out_does_not_send_what_another_worker_took_over(app, smtp, make_event,
                                                                                  monkeypatch):
    """A batch that outlives its lease (a slow SMTP server, a long batch) is claimed again by another
    worker while the first is still working through it. Two live workers must never both send a row:
    the first must find out, before it sends, that the row is no longer its own."""
    from eventsvc.outbox import delivery

    event = make_event()
    bulk_registrants(event, 3)
    assert fan_out(event) == 3
    lease = timedelta(seconds=app.config["OUTBOX_LEASE_SECONDS"])
    first = delivery.claim_due("worker-1", limit=10)
    assert len(first) == 3
    real_render, taken_over = delivery.render, []

    def slow_render(message):
        mail = real_render(message)
        if not taken_over:  # worker 1 is slow: its lease runs out, worker 2 claims and sends the rows
            taken_over.append(True)
            second = delivery.claim_due("worker-2", limit=10, now=utcnow() + lease + timedelta(seconds=1))
            assert sorted(second) == sorted(first)
            delivery.deliver_batch(second, "worker-2")
        return mail

    monkeypatch.setattr(delivery, "render", slow_render)
    delivery.deliver_batch(first, "worker-1")
    smtp.wait_for(3, timeout=10)
    time.sleep(0.3)
    received = Counter(message_ids(smtp.messages))
    assert len(received) == 3
    assert set(received.values()) == {1}, f"sent twice: {[m for m, n in received.items() if n > 1]}"


@contextlib.contextmanager
def app_of_its_own(database_url, **settings):
    """A second app on the test's database, answering as in production, and get(path) on it, each
    request in a context of its own as under a server (its connection goes back to the pool after).
    Both apps' pooled connections are let go at the end: these tests close server connections."""
    import contextvars

    from eventsvc import create_app

    from .conftest import test_config

    db.session.remove()  # the test's own connection back to its pool, out of a transaction
    app = create_app(test_config(database_url, PROPAGATE_EXCEPTIONS=False, **settings))
    client = app.test_client()
    try:
        yield app, lambda path: contextvars.Context().run(client.get, path)
    finally:
        with app.app_context():
            db.engine.dispose()
        db.engine.dispose()


@pytest.mark.parametrize("idle_seconds, answer", [(0.2, 200), (3600, 503)])
def test_a_pooled_connection_the_database_closed_while_idle_is_tested_and_replaced_before_use(
        backend, database_url, make_event, idle_seconds, answer):
    """A connection that waited in the pool longer than DATABASE_PING_AFTER_IDLE_SECONDS is
    tested before a request gets it. One used a moment ago is not (no round trip on a busy
    process): the second case shows what the test saves a visitor from."""
    if backend != "postgresql":
        pytest.skip("closes server connections from the outside")
    path = f"/e/{make_event().slug}"
    with app_of_its_own(database_url, DATABASE_PING_AFTER_IDLE_SECONDS=idle_seconds) as (_app, get):
        assert get(path).status_code == 200
        time.sleep(0.3)
        with admin_connection(database_url) as admin:
            closed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert closed >= 1
        assert get(path).status_code == answer
        assert get(path).status_code == 200  # either way the pool recovers at once


def test_a_connection_the_database_drops_during_a_request_never_turns_the_answer_into_a_bare_500(
        backend, database_url, make_event):
    """The request has a transaction open when the server terminates its connection (as a
    restart does). Ending the request rolls back on that dead connection: the visitor must still
    get the answer the request made, and the next request a working connection."""
    if backend != "postgresql":
        pytest.skip("closes server connections from the outside")
    from sqlalchemy import text

    slug = make_event().slug
    with app_of_its_own(database_url) as (app, get):
        @app.get("/test-only/connection-dropped")
        def connection_dropped():
            pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()  # a transaction is open now
            with admin_connection(database_url) as admin:
                # Waits (up to 5 s) until that backend is gone, so the rollback below finds it dead.
                assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
            return "answered"

        answer = get("/test-only/connection-dropped")
        assert (answer.status_code, answer.get_data(as_text=True)) == (200, "answered")
        assert get(f"/e/{slug}").status_code == 200
