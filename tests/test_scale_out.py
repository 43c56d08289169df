"""Scale-out proven (issue 10, item 1): two gunicorn servers and two workers, one PostgreSQL.

People register concurrently through both servers, an organiser logs in on one
server and reschedules through the other (the web tier is stateless: the
session cookie is valid on every server), and every notice is delivered
exactly once to the SMTP server, with both workers sharing the work
(FOR UPDATE SKIP LOCKED plus a lease).
"""
import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from eventsvc.auth.services import create_organiser
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration

from .processes import (FormClient, Processes, as_header, message_ids, register_many, service_env, wait_until,
                        worker_totals)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes(tmp_path):
    """Processes this test starts; every one still running is stopped by PID at teardown."""
    with Processes(tmp_path / "logs") as procs:
        yield procs
PEOPLE, PLACES = 100, 60
PASSWORD = "correct horse battery staple"
NOTICE_KINDS = ("confirmation", "waitlisted", "rescheduled")


def fresh(statement):
    db.session.rollback()
    return db.session.execute(statement)


def test_two_servers_and_two_workers_deliver_every_notice_exactly_once(app, backend, database_url, make_event,
                                                                       processes):
    if backend != "postgresql":
        pytest.skip("scale-out runs on PostgreSQL (SQLite is one machine, one worker)")
    from eventsvc.devmail.sink import MailSink

    event = make_event(capacity=PLACES)
    create_organiser("planner@example.org", "Planner", PASSWORD)
    phases, started = {}, time.monotonic()
    with MailSink() as sink:
        env = service_env(database_url, mail_port=sink.port)
        # Two servers (as behind a load balancer), one process each: every gunicorn process
        # imports the whole app, and this test runs on two cores next to four other processes.
        web = [processes.gunicorn(env, workers=1, name=f"web-{i}", wait=False) for i in (1, 2)]
        for server in web:
            server.wait_ready()
        workers = [processes.worker(env, "--idle-seconds", "0.2", "--batch-size", "10", name=f"worker-{i}")
                   for i in (1, 2)]

        phases["start"] = time.monotonic() - started
        # 1. A hundred people at once, spread over both servers.
        responses = register_many([server.url for server in web], event.slug, range(PEOPLE), concurrency=16)
        bad = {n: r for n, r in responses.items() if isinstance(r, Exception) or r.status_code != 303}
        assert not bad, list(bad.items())[:3]

        phases["register"] = time.monotonic() - started - sum(phases.values())
        # 2. The organiser logs in on server 1 and reschedules on server 2.
        with FormClient(web[0].url) as browser:
            login = browser.post_form("/inloggen", {"email": "planner@example.org", "password": PASSWORD})
            assert login.status_code == 303, login.text[:500]
            form = f"{web[1].url}/beheer/{event.id}/verplaatsen"
            new_start = (event.starts_at + timedelta(days=7)).astimezone(event.tz)
            moved = browser.post_form(form, {"date": new_start.date().isoformat(), "start": "12:45",
                                             "end": "14:00", "reason": "De zaal is verbouwd"})
            assert moved.status_code == 303, moved.text[:1000]
            page = browser.get(moved.headers["Location"] if moved.headers["Location"].startswith("http")
                               else web[1].url + moved.headers["Location"])
            assert f"{PEOPLE} deelnemers krijgen bericht" in page.text, re.findall(r"deelnemers? krijg\w+ bericht",
                                                                                  page.text)

        phases["reschedule"] = time.monotonic() - started - sum(phases.values())
        # 3. Every notice delivered; then the workers leave (SIGTERM) and report what each sent.
        expected = 2 * PEOPLE
        wait_until(lambda: sink.count >= expected, timeout=120, interval=0.25,
                   what=f"{expected} notices at the SMTP server")
        due = (Message.status == "pending") & (Message.send_after <= func.now())
        wait_until(lambda: fresh(select(func.count()).select_from(Message).where(due)).scalar_one() == 0,
                   timeout=30, what="an empty due queue")
        time.sleep(1.0)  # time for a late duplicate to show up, if there were one
        for worker in workers:
            assert worker.alive(), worker.tail()
            assert worker.stop(grace=20) == 0, worker.tail()
        mails = list(sink.messages)
        phases["deliver"] = time.monotonic() - started - sum(phases.values())

    totals = [worker_totals(worker.output()) for worker in workers]
    print(f"\nscale-out: {PEOPLE} registrations over 2 servers, 1 reschedule; "
          f"worker 1 sent {totals[0].get('sent')}, worker 2 sent {totals[1].get('sent')}; "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items()))
    assert all(t.get("sent", 0) > 0 for t in totals), totals
    assert sum(t["sent"] for t in totals) == expected

    statuses = dict(fresh(select(Registration.status, func.count()).group_by(Registration.status)).all())
    assert statuses == {"confirmed": PLACES, "waitlisted": PEOPLE - PLACES}
    assert fresh(select(Event.confirmed_count).where(Event.id == event.id)).scalar_one() == PLACES
    rows = fresh(select(Message.message_id, Message.kind, Message.status)
                 .where(Message.kind.in_(NOTICE_KINDS))).all()
    assert Counter(row.kind for row in rows) == {"confirmation": PLACES, "waitlisted": PEOPLE - PLACES,
                                                 "rescheduled": PEOPLE}
    assert {row.status for row in rows} == {"sent"}
    received = Counter(mid.rsplit("@", 1)[0] for mid in message_ids(mails))
    assert len(mails) == expected
    assert set(received) == {as_header(row.message_id) for row in rows}
    assert set(received.values()) == {1}, [mid for mid, n in received.items() if n > 1]
    for server in web:
        assert server.alive() and "Traceback" not in server.output(), server.tail()
