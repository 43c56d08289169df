"""Invariant 1: no overbooking, however many people register at once."""
import threading

import pytest

from sqlalchemy import func, select

from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.registrations.services import cancel_registration, register


def _in_threads(app, count, work):
    errors, barrier = [], threading.Barrier(count)

    def run(i):
        with app.app_context():
            try:
                barrier.wait()
                work(i)
            except Exception as error:  # collected and reported below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    db.session.rollback()  # end this thread's read snapshot: see what the threads wrote


def test_many_threads_racing_for_the_last_seats_never_overbook(app, make_event):
    event = make_event(capacity=5)
    event_id = event.id

    def work(i):
        register(db.session.get(Event, event_id), name=f"P {i}", email=f"p{i}@example.org")

    _in_threads(app, 24, work)
    db.session.rollback()  # end the read snapshot, expire everything
    statuses = db.session.execute(
        select(Registration.status, func.count()).group_by(Registration.status)).all()
    assert dict(statuses) == {"confirmed": 5, "waitlisted": 19}
    assert db.session.get(Event, event_id).confirmed_count == 5
    notices = select(func.count()).select_from(Message).where(Message.kind.in_(("confirmation", "waitlisted")))
    assert db.session.scalar(notices) == 24


def test_reviving_a_cancelled_registration_twice_at_once_takes_one_seat(app, make_event, register):
    """A double click on the form of a registration cancelled earlier: one revival, one repeat."""
    event = make_event(capacity=10)
    event_id, zoe = event.id, register(event, email="zoe@example.org")
    cancel_registration(zoe)

    def work(i):
        register(db.session.get(Event, event_id), email="zoe@example.org")

    _in_threads(app, 6, work)
    revived = db.session.get(Registration, zoe.id)
    assert revived.status == "confirmed" and db.session.get(Event, event_id).confirmed_count == 1
    pending = db.session.scalars(select(Message.kind).where(Message.registration_id == zoe.id,
                                                            Message.status == "pending")).all()
    assert sorted(k for k in pending if k != "already_registered") == [
        "confirmation", "registration_cancelled", "reminder"]


def test_same_address_at_the_same_time_gives_one_row(app, make_event):
    event_id = make_event(capacity=10).id

    def work(i):
        register(db.session.get(Event, event_id), name="Zoë", email="ZOE@example.org " if i % 2 else "zoe@example.org")

    _in_threads(app, 8, work)
    assert db.session.scalar(select(func.count()).select_from(Registration)) == 1
    assert db.session.get(Event, event_id).confirmed_count == 1


def test_concurrent_cancellations_promote_each_waiting_person_once(app, make_event, register):
    event = make_event(capacity=4)
    confirmed = [register(event) for _ in range(4)]
    waiting = [register(event) for _ in range(6)]
    ids = [r.id for r in confirmed]

    _in_threads(app, 4, lambda i: cancel_registration(db.session.get(Registration, ids[i])))
    db.session.rollback()  # end the read snapshot, expire everything
    assert db.session.get(Event, event.id).confirmed_count == 4
    statuses = [db.session.get(Registration, r.id).status for r in waiting]
    assert statuses == ["confirmed"] * 4 + ["waitlisted"] * 2


def _writers_file_is_free(path) -> bool:
    """Whether another process could take the SQLite writers' turn right now."""
    import subprocess
    import sys

    probe = ("import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", probe, path], timeout=30).returncode == 0


def test_sqlite_writers_take_turns_across_processes_and_a_nested_unit_of_work_keeps_its_turn(app, backend):
    """On SQLite a unit of work holds an flock() on `<database>.writers` from before its BEGIN
    until after its COMMIT or ROLLBACK, so other processes queue in the kernel rather than poll
    SQLite's lock; a unit of work inside another neither waits for itself nor lets go early."""
    import os

    from eventsvc.transaction import unit_of_work

    if backend != "sqlite":
        pytest.skip("PostgreSQL has row locks: no queue for writers")
    writers = os.path.abspath(db.engine.url.database) + ".writers"
    seen = {}

    def inner():
        seen["inner"] = _writers_file_is_free(writers)
        return "inner"

    def outer():
        seen["outer"] = _writers_file_is_free(writers)
        seen["nested"] = unit_of_work(inner)
        seen["after inner"] = _writers_file_is_free(writers)
        return "outer"

    done = []
    thread = threading.Thread(target=lambda: done.append(_in_app(app, lambda: unit_of_work(outer))))
    thread.start()
    thread.join(60)
    assert done == ["outer"], "a nested unit of work waited for its own turn"
    assert seen == {"outer": False, "inner": False, "nested": "inner", "after inner": False}
    assert _writers_file_is_free(writers)

    def fails():
        seen["failing"] = _writers_file_is_free(writers)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        unit_of_work(fails)
    assert seen["failing"] is False and _writers_file_is_free(writers)  # let go on a rollback too


def test_a_sqlite_writer_takes_its_turn_after_checking_out_its_connection(app, backend):
    """The turn covers the transaction alone: a unit of work takes it just before its BEGIN
    IMMEDIATE, so the pool's work (or a new connection's set-up) never holds up other writers."""
    import os

    from sqlalchemy import event

    from eventsvc.transaction import unit_of_work

    if backend != "sqlite":
        pytest.skip("PostgreSQL has row locks: no queue for writers")
    writers = os.path.abspath(db.engine.url.database) + ".writers"
    seen = {}

    def at_checkout(*_):
        seen.setdefault("at checkout", _writers_file_is_free(writers))

    db.session.close()  # the unit of work checks out a connection of its own
    event.listen(db.engine, "checkout", at_checkout)
    try:
        unit_of_work(lambda: seen.setdefault("in the transaction", _writers_file_is_free(writers)))
    finally:
        event.remove(db.engine, "checkout", at_checkout)
    assert seen == {"at checkout": True, "in the transaction": False}
    assert _writers_file_is_free(writers)


def test_a_begin_immediate_that_finds_the_database_locked_raises_a_retryable_error_and_lets_the_turn_go(
        app, backend):
    """Another program (here a plain sqlite3 connection) holds the write lock past the busy
    timeout: the BEGIN fails with SQLAlchemy's OperationalError, which unit_of_work retries,
    not the driver's own, which it would not; and the turn taken for it is let go."""
    import os
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from eventsvc.extensions import WRITE_TRANSACTION
    from eventsvc.transaction import _is_retryable, sqlite_writer_turn

    if backend != "sqlite":
        pytest.skip("SQLite's write lock")
    writers = os.path.abspath(db.engine.url.database) + ".writers"
    blocker = sqlite3.connect(db.engine.url.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    db.session.close()
    connection = db.engine.connect()
    try:
        connection.connection.driver_connection.execute("PRAGMA busy_timeout=50")
        with sqlite_writer_turn(), pytest.raises(OperationalError) as raised:
            connection.execution_options(**{WRITE_TRANSACTION: True}).begin()
        assert "locked" in str(raised.value) and _is_retryable(raised.value)
    finally:
        connection.invalidate()  # its busy timeout is the test's
        connection.close()
        blocker.rollback()
        blocker.close()
    assert _writers_file_is_free(writers)


def _in_app(app, work):
    with app.app_context():
        try:
            return work()
        finally:
            db.session.remove()


def _first_commit_lost(work):
    """Run `work()` while the first COMMIT (on any connection) finds the database locked; (COMMITs, result)."""
    from sqlalchemy import event as sqlalchemy_event
    from sqlalchemy.exc import OperationalError

    commits = []

    def locked_once(_connection):
        commits.append(1)
        if len(commits) == 1:
            raise OperationalError("COMMIT", {}, Exception("database is locked"))

    sqlalchemy_event.listen(db.engine, "commit", locked_once)
    try:
        result = work()
    finally:
        sqlalchemy_event.remove(db.engine, "commit", locked_once)
    return len(commits), result


def test_a_registration_retried_after_its_row_was_written_keeps_one_row_and_one_confirmation(app, make_event):
    """A unit of work that loses a race after its INSERT (here: its commit finds the database
    locked, once) is rolled back and run again. The retry writes the row anew, on SQLite under
    the same rowid, and the registrant gets exactly what one attempt gives."""
    event = make_event(capacity=5)
    commits, result = _first_commit_lost(lambda: register(event, name="Noor", email="noor@example.org"))
    assert commits == 2 and result.shown_status == "confirmed" and not result.repeat
    assert result.registration.email == "noor@example.org" and result.registration.is_confirmed
    rows = db.session.scalars(select(Registration).where(Registration.event_id == event.id)).all()
    assert [r.id for r in rows] == [result.registration.id]
    kinds = db.session.scalars(select(Message.kind).where(Message.registration_id == rows[0].id)).all()
    assert kinds.count("confirmation") == 1
    assert db.session.scalar(select(Event.confirmed_count).where(Event.id == event.id)) == 1


def test_a_new_registration_commits_on_a_connection_of_its_own_and_the_request_reads_it_afterwards(
        app, make_event):
    """A registration for a new address writes on a Core connection of its own, not in the ORM
    session. A read the request made before it (here: the event) is ended first, so what the
    request reads afterwards includes the new rows, on SQLite's snapshots too. The waiting-list
    path (the confirmation taken back, the waiting-list notice queued) runs there as well."""
    from sqlalchemy import event as sqlalchemy_event

    from eventsvc.registrations.services import register_by_slug
    from eventsvc.webhooks.services import create_webhook

    event = make_event(capacity=1, day_before_reminder=True)
    slug = event.slug
    create_webhook(url="https://hooks.example.org/in", event_types=["registration.created"])
    assert db.session.get(Event, event.id).places_left == 1  # a read transaction is open now
    session_begins = []

    def began(*_):
        session_begins.append(1)

    sqlalchemy_event.listen(db.session(), "after_begin", began)
    try:
        first = register_by_slug(slug, name="Noor", email="noor@example.org")
        second = register_by_slug(slug, name="Sem", email="sem@example.org")
    finally:
        sqlalchemy_event.remove(db.session(), "after_begin", began)
    assert session_begins == []
    assert (first.shown_status, second.shown_status) == ("confirmed", "waitlisted")
    assert db.session.get(Event, event.id).places_left == 0
    assert (first.registration.status, second.registration.status) == ("confirmed", "waitlisted")
    assert second.registration.waitlisted_at is not None

    def kinds(result):
        return sorted(db.session.scalars(select(Message.kind).where(
            Message.registration_id == result.registration_id, Message.status == "pending")))
    assert kinds(first) == ["confirmation", "day_before", "reminder"]
    assert kinds(second) == ["waitlisted"]
    hooked = db.session.scalars(select(Message.payload).where(Message.event_id == event.id,
                                                              Message.kind == "webhook")).all()
    assert sorted(payload["body"]["data"]["status"] for payload in hooked) == ["confirmed", "waitlisted"]


def test_a_registration_inside_another_unit_of_work_is_part_of_it(app, make_event):
    """Called inside a caller's unit of work, a registration joins that transaction: when the
    caller fails afterwards, neither the row, nor the seat, nor a notice remains."""
    from eventsvc.transaction import unit_of_work

    event = make_event(capacity=3)

    def registers_then_fails():
        assert register(event, name="Noor", email="noor@example.org").shown_status == "confirmed"
        raise RuntimeError("the caller's next step failed")

    with pytest.raises(RuntimeError):
        unit_of_work(registers_then_fails)
    assert db.session.scalar(select(func.count(Registration.id)).where(Registration.event_id == event.id)) == 0
    assert db.session.scalar(select(func.count(Message.id)).where(Message.event_id == event.id)) == 0
    assert db.session.get(Event, event.id).confirmed_count == 0


def test_a_registration_on_its_own_connection_writes_in_its_turn_and_a_session_unit_of_work_inside_is_refused(
        app, backend, make_event):
    """The connection's transaction is a write transaction (on SQLite: BEGIN IMMEDIATE, in the
    process's turn), and work on it cannot open a second transaction through the session, which
    on SQLite would wait for the write lock its own thread holds."""
    import os

    from sqlalchemy import event as sqlalchemy_event

    from eventsvc.transaction import unit_of_work, unit_of_work_on_connection

    slug = make_event(capacity=3).slug
    writers = os.path.abspath(db.engine.url.database) + ".writers" if backend == "sqlite" else None
    at_commit = []

    def committing(_connection):
        at_commit.append(_writers_file_is_free(writers) if writers else "no turn on PostgreSQL")

    sqlalchemy_event.listen(db.engine, "commit", committing)
    try:
        from eventsvc.registrations.services import register_by_slug

        assert register_by_slug(slug, name="Noor", email="noor@example.org").shown_status == "confirmed"
    finally:
        sqlalchemy_event.remove(db.engine, "commit", committing)
    assert at_commit == [False] if writers else at_commit == ["no turn on PostgreSQL"]

    with pytest.raises(RuntimeError, match="inside one on a Core connection"):
        unit_of_work_on_connection(lambda connection: unit_of_work(lambda: None))
    assert unit_of_work_on_connection(lambda outer: unit_of_work_on_connection(lambda inner: inner is outer))


def test_a_revived_registration_retried_after_a_lost_commit_keeps_one_row_and_one_confirmation(app, make_event):
    """The session's path (reviving a cancelled registration) retries a lost commit as the
    connection's path does."""
    event = make_event(capacity=5)
    first = register(event, name="Noor", email="noor@example.org").registration
    cancel_registration(first)
    commits, result = _first_commit_lost(lambda: register(event, name="Noor", email="noor@example.org"))
    assert commits == 2 and result.shown_status == "confirmed" and not result.repeat
    assert result.registration_id == first.id and result.registration.is_confirmed
    confirmations = db.session.scalars(select(Message.dedupe_key).where(
        Message.registration_id == first.id, Message.kind == "confirmation", Message.status == "pending")).all()
    assert len(confirmations) == 1
