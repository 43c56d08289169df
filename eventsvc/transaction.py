"""One unit of work: commit all of it or none of it, retrying lost races."""
import random
import time

from sqlalchemy.exc import DBAPIError, IntegrityError

from .extensions import WRITE_TRANSACTION, db

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
            _begin_write()
            result = work()
            db.session.commit()
            return result
        except IntegrityError:
            db.session.rollback()
            if not retry_integrity or attempt == attempts:
                raise
        except DBAPIError as error:
            db.session.rollback()
            if not _is_retryable(error) or attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))
        except BaseException:
            db.session.rollback()
            raise


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
