"""One unit of work: commit all of it or none of it, retrying lost races."""
import fcntl
import os
import random
import threading
import time
from contextlib import contextmanager, nullcontext

from sqlalchemy.exc import DBAPIError, IntegrityError

from .extensions import WRITE_TRANSACTION, db
from .observability import SQLITE_WRITER_HOLD, SQLITE_WRITER_WAIT

# SQLite: another writer holds the lock, or our snapshot went stale (WAL).
# PostgreSQL: deadlock_detected, serialization_failure.
_RETRYABLE_PG_CODES = {"40P01", "40001"}


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
    """
    for attempt in range(1, attempts + 1):
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
        except IntegrityError:
            if not retry_integrity or attempt == attempts:
                raise
        except DBAPIError as error:
            if not _is_retryable(error) or attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))


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
    people wait very long. Here every unit of work of every process first takes
    an exclusive flock() on `<database>.writers` (threads of one process, a lock of
    their own), and the kernel hands it to the next waiter the moment it is let
    go. SQLite's own lock still guards the data; this only orders who asks for it.
    The wait for the turn and the time it is held are metrics (observability.py).
    """

    def __init__(self):
        self._threads = threading.Lock()
        self._local = threading.local()
        self._files: dict[tuple[int, str], int] = {}

    @contextmanager
    def turn(self, database: str):
        if getattr(self._local, "depth", 0):  # a unit of work inside another already has the turn
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        asked = time.perf_counter()
        with self._threads:
            fd = self._file(database)
            fcntl.flock(fd, fcntl.LOCK_EX)
            got = time.perf_counter()
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
                SQLITE_WRITER_HOLD.observe(time.perf_counter() - got)
                SQLITE_WRITER_WAIT.observe(got - asked)

    def _file(self, database: str) -> int:
        key = (os.getpid(), database)  # a forked process opens its own
        if key not in self._files:
            self._files[key] = os.open(f"{database}.writers", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._files[key]


_WRITERS = _WriterQueue()


def sqlite_writer_turn():
    """The turn to write on a SQLite file database (see _WriterQueue); nothing to wait for elsewhere."""
    url = db.session.get_bind().url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return nullcontext()
    return _WRITERS.turn(os.path.abspath(url.database))
