"""One unit of work: commit all of it or none of it, retrying lost races."""
import fcntl
import os
import random
import threading
import time
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar

from sqlalchemy.exc import DBAPIError, IntegrityError

from .extensions import WRITE_TRANSACTION, db
from .observability import SQLITE_WRITER_HOLD, SQLITE_WRITER_WAIT

# SQLite: another writer holds the lock, or our snapshot went stale (WAL).
# PostgreSQL: deadlock_detected, serialization_failure.
_RETRYABLE_PG_CODES = {"40P01", "40001"}
# The unit of work this thread is inside: _SESSION, the Core connection of one on a connection, or None.
_ACTIVE = ContextVar("eventsvc_unit_of_work", default=None)
_SESSION = "session"
_WRITE_ENGINE = "_eventsvc_write_engine"


def _is_retryable(error: DBAPIError) -> bool:
    original = getattr(error, "orig", None)
    if getattr(original, "sqlstate", None) in _RETRYABLE_PG_CODES:
        return True
    message = str(original or "").lower()
    return "database is locked" in message or "database is busy" in message


def unit_of_work(work, *, attempts: int = 8, retry_integrity: bool = False):
    """Run `work()` and commit; roll back on any error.

    A transaction that lost a race (a lock, a stale snapshot, or with
    `retry_integrity` a unique constraint another request just satisfied) is
    run again from the start, so `work` must read everything it decides on.
    Inside another unit of work with the session, `work()` is part of that one:
    it commits, rolls back and is retried with it.
    """
    active = _ACTIVE.get()
    if active is _SESSION:
        return work()
    if active is not None:
        raise RuntimeError("a unit of work with the session cannot run inside one on a Core connection")
    return _retrying(lambda: _in_session(work), attempts=attempts, retry_integrity=retry_integrity)


def unit_of_work_on_connection(work, *, attempts: int = 8, retry_integrity: bool = False):
    """unit_of_work() for `work(connection)` that runs its statements itself, on a Core connection.

    The same transaction, write turn and retries, without the ORM session around them: the
    session's autobegin, snapshot and commit bookkeeping cost more CPU than a registration's
    statements, which run on the driver anyway (prepared.py). `work` must not use the session.
    Inside another unit of work it runs on that one's connection, as part of it. When the
    session holds changes not yet committed, it runs as unit_of_work() runs, on the session's
    connection.
    """
    active = _ACTIVE.get()
    if active is _SESSION:
        return work(db.session.connection())
    if active is not None:
        return work(active)
    session = db.session()
    if session.new or session.dirty or session.deleted:
        return unit_of_work(lambda: work(db.session.connection()), attempts=attempts, retry_integrity=retry_integrity)
    if session.in_transaction():
        _end_read(session)
    engine = session.get_bind()
    return _retrying(lambda: _on_connection(engine, work), attempts=attempts, retry_integrity=retry_integrity)


def _end_read(session) -> None:
    """End a read the request left open, so what it reads after the unit of work includes what the
    unit of work wrote (on SQLite a read keeps its snapshot). Its objects reload when next used.
    A connection the server dropped in the meantime is let go (see extensions.close_session_safely)."""
    try:
        session.rollback()
    except DBAPIError:
        session.close()


def _retrying(attempt_once, *, attempts: int, retry_integrity: bool):
    for attempt in range(1, attempts + 1):
        try:
            return attempt_once()
        except IntegrityError:
            if not retry_integrity or attempt == attempts:
                raise
        except DBAPIError as error:
            if not _is_retryable(error) or attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))


def _in_session(work):
    active = _ACTIVE.set(_SESSION)
    try:
        with sqlite_writer_turn():
            try:
                _begin_write()
                result = work()
                db.session.commit()
                return result
            except BaseException:
                db.session.rollback()
                raise
    finally:
        _ACTIVE.reset(active)


def _on_connection(engine, work):
    with sqlite_writer_turn(engine), _write_engine(engine).connect() as connection, connection.begin():
        active = _ACTIVE.set(connection)
        try:
            return work(connection)
        finally:
            _ACTIVE.reset(active)


def _write_engine(engine):
    """`engine` with the option that makes extensions._begin start a write transaction (one per engine)."""
    writer = engine.__dict__.get(_WRITE_ENGINE)
    if writer is None:
        writer = engine.__dict__.setdefault(_WRITE_ENGINE, engine.execution_options(**{WRITE_TRANSACTION: True}))
    return writer


def _begin_write() -> None:
    """On SQLite, start this unit of work as a write transaction (see extensions._begin).

    A read transaction still open from earlier in the request is ended first;
    objects loaded in it are expired and reload inside the write transaction,
    so the work decides on current data."""
    if db.session.get_bind().dialect.name != "sqlite":
        return
    if db.session().in_transaction():
        db.session.rollback()
    db.session.connection(execution_options={WRITE_TRANSACTION: True})


class _WriterQueue:
    """Units of work on one SQLite file take turns in a queue the kernel keeps.

    SQLite lets one writer in at a time, and one that finds the lock taken polls
    for it, sleeping 1, 2, 5, 10 … up to 100 ms between tries (busy_timeout). The
    lock then often sits free while the next writer sleeps, and the one that
    just let go takes it again for its next request: throughput drops and some
    people wait very long. Here every unit of work of every process takes an
    exclusive flock() on `<database>.writers` (threads of one process, a lock of
    their own), and the kernel hands it to the next waiter the moment it is let
    go. SQLite's own lock still guards the data; this only orders who asks for it.

    The turn is taken just before BEGIN IMMEDIATE (extensions._begin calls take()),
    after the connection is checked out of the pool, and let go when the unit of
    work's scope ends, after its COMMIT or ROLLBACK: everyone waits only for the
    transactions themselves. The wait for the turn and the time it is held are
    metrics (observability.py).
    """

    def __init__(self):
        self._threads = threading.Lock()
        self._local = threading.local()
        self._files: dict[tuple[int, str], int] = {}

    @contextmanager
    def scope(self, database: str):
        """A unit of work that may write to `database`. A unit of work inside another is part of
        its scope: it neither waits for the turn the outer one holds nor lets it go early."""
        local = self._local
        if getattr(local, "database", None) is not None:
            yield
            return
        local.database, local.taken = database, None
        try:
            yield
        finally:
            taken, local.database, local.taken = local.taken, None, None
            if taken is not None:
                self._let_go(*taken)

    def take(self) -> None:
        """Wait for the turn, in a scope whose turn is not yet taken; elsewhere, nothing to do."""
        local = self._local
        if getattr(local, "database", None) is None or local.taken is not None:
            return
        asked = time.perf_counter()
        self._threads.acquire()
        try:
            fd = self._file(local.database)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        local.taken = (fd, asked, time.perf_counter())

    def _let_go(self, fd: int, asked: float, got: float) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        self._threads.release()
        SQLITE_WRITER_HOLD.observe(time.perf_counter() - got)
        SQLITE_WRITER_WAIT.observe(got - asked)

    def _file(self, database: str) -> int:
        key = (os.getpid(), database)  # a forked process opens its own
        if key not in self._files:
            self._files[key] = os.open(f"{database}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._files[key]


_WRITERS = _WriterQueue()


def sqlite_writer_turn(engine=None):
    """The scope of a unit of work that takes its turn to write on a SQLite file database (see
    _WriterQueue) when it begins; nothing to wait for elsewhere. `engine`: the session's bind."""
    url = (engine or db.session.get_bind()).url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return nullcontext()
    return _WRITERS.scope(os.path.abspath(url.database))


def take_sqlite_writer_turn() -> None:
    """Called by extensions._begin just before BEGIN IMMEDIATE (see _WriterQueue)."""
    _WRITERS.take()
