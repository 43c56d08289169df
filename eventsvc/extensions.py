"""Unbound extensions; `create_app` binds them to an app."""
import logging
import time

from flask_babel import Babel
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError

from .sessions import CSRFProtect

# Stable constraint names, so migrations can alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
WRITE_TRANSACTION = "eventsvc_write_transaction"  # execution option read by _begin
migrate = Migrate()
csrf = CSRFProtect()
mail = Mail()
login_manager = LoginManager()
babel = Babel()


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection, _record):
    """SQLite: WAL, foreign keys, wait for locks, and real transactions.

    pysqlite's own transaction handling starts no transaction before a SELECT,
    so reads and the writes that depend on them would not be atomic; we emit
    BEGIN ourselves (see `_begin`)."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@event.listens_for(Engine, "begin")
def _begin(conn):
    """SQLite: a unit of work that will write takes the write lock up front
    (BEGIN IMMEDIATE; it waits its turn under busy_timeout). A plain BEGIN
    that reads first cannot wait when it later needs to write: SQLite answers
    "database is locked" at once, so busy writers would fail instead of queue.
    Reads stay deferred and never block anyone in WAL mode."""
    if conn.dialect.name == "sqlite":
        immediate = conn.get_execution_options().get(WRITE_TRANSACTION)
        if immediate:
            from .transaction import take_sqlite_writer_turn  # here: transaction.py imports this module

            take_sqlite_writer_turn()  # let go by the unit of work, after its COMMIT or ROLLBACK
        # Straight to the driver: this runs for every transaction, and SQLAlchemy's
        # statement machinery costs several times the BEGIN itself. A failure still goes
        # through SQLAlchemy's handler, so a BEGIN IMMEDIATE that finds the database locked
        # raises its OperationalError, which unit_of_work retries, not the driver's own.
        statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        try:
            conn.connection.driver_connection.execute(statement)
        except Exception as error:
            conn._handle_dbapi_exception(error, statement, None, None, None)


def ping_connections_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection before use, but only one that sat idle for `idle_seconds`.

    What `pool_pre_ping` does, without its round trip on every checkout: a
    connection a busy process hands from request to request was in use a moment
    ago, while one that waited in the pool may have been closed by the database,
    a restart or a firewall in the meantime. A failed test makes the pool
    discard the connection and hand out a fresh one, so the request never sees it.
    """
    @event.listens_for(engine, "checkin")
    def _idle_from_now(_dbapi_connection, record):
        if record is not None:
            record.info["eventsvc_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):
        idle_since = record.info.get("eventsvc_idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or handed back a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("the connection was closed while idle in the pool") from error


def close_session_safely(_exception=None) -> None:
    """End the request's session, also when the database has dropped its connection.

    Flask-SQLAlchemy's own teardown closes the session with a rollback; when the server
    terminated the connection in the meantime (a restart, an administrator), that rollback
    raises, and an error from a teardown escapes Flask: the visitor gets the web server's bare
    500 instead of the answer the request already made (often the 503 page). SQLAlchemy has
    marked the connection invalid by then, so closing again just lets it go."""
    try:
        db.session.remove()
    except DBAPIError:
        logging.getLogger(__name__).warning("database connection lost while ending a request; dropped")
        db.session.remove()
