"""Upgrades: an empty database walks every migration up to head, and the last
migration goes down and up again, on SQLite and on PostgreSQL.

Each test gets its own throw-away database (never the session database the
other tests share). The steps are the ones the deployment guide gives:
`flask --app wsgi db upgrade` is flask_migrate's `upgrade()`.
"""
import contextlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from eventsvc import create_app
from eventsvc.extensions import db
from tests.conftest import BACKENDS, test_config, throwaway_database


@contextlib.contextmanager
def app_on(url):
    """An app bound to `url`, inside its app context; its connections closed afterwards."""
    app = create_app(test_config(url))
    try:
        with app.app_context():
            yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def script_directory():
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from flask import current_app

    config = Config()
    config.set_main_option("script_location", str(current_app.extensions["migrate"].directory))
    return ScriptDirectory.from_config(config)


def current_heads():
    with db.engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def schema_diff():
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata)


@pytest.fixture(params=BACKENDS)
def empty_database(request, tmp_path):
    with throwaway_database(request.param, tmp_path) as url:
        yield url


def test_there_is_exactly_one_head(empty_database):
    # Two migrations written in parallel on the same parent make two heads, and
    # `flask db upgrade` then refuses to run: merge them (`flask db merge heads`).
    with app_on(empty_database):
        assert len(script_directory().get_heads()) == 1


def test_an_empty_database_upgrades_step_by_step_to_head(empty_database):
    from flask_migrate import upgrade

    with app_on(empty_database):
        scripts = script_directory()
        revisions = [script.revision for script in scripts.walk_revisions("base", "heads")][::-1]
        assert revisions, "no migrations found"
        assert current_heads() == set()
        for revision in revisions:
            upgrade(revision=revision)
            assert current_heads() == {revision}
        assert current_heads() == set(scripts.get_heads())
        assert schema_diff() == []


def test_the_last_migration_goes_down_and_up_again(empty_database):
    from flask_migrate import downgrade, upgrade

    with app_on(empty_database):
        scripts = script_directory()
        head = scripts.get_current_head()
        upgrade()
        assert current_heads() == {head}
        tables_at_head = set(inspect(db.engine).get_table_names())

        downgrade(revision="-1")
        previous = scripts.get_revision(head).down_revision
        assert current_heads() == ({previous} if previous else set())
        if previous is None:  # the first migration went down: nothing but alembic's table is left
            assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}

        upgrade()
        assert current_heads() == {head}
        assert set(inspect(db.engine).get_table_names()) == tables_at_head
        assert schema_diff() == []


def test_notices_superseded_before_the_upgrade_give_up_their_keys(empty_database):
    from flask_migrate import upgrade
    from sqlalchemy import text

    with app_on(empty_database):
        upgrade(revision="bd04e1a0d9a6")
        rows = [("reminder:7:20310615T104500", "superseded"), ("confirmation:7:20310101T000000", "sent"),
                ("reminder:8:20310615T104500", "pending")]
        for key, status in rows:
            db.session.execute(text(
                "INSERT INTO messages (kind, dedupe_key, payload, send_after, status, attempts, message_id, "
                "created_at) VALUES ('custom', :key, '{}', '2031-01-01 00:00:00', :status, 0, :key, "
                "'2031-01-01 00:00:00')"), {"key": key, "status": status})
        db.session.commit()
        upgrade()
        upgrade()  # nothing more to do at head; a second run changes nothing
        keys = dict(db.session.execute(text("SELECT status, dedupe_key FROM messages")).all())
        superseded_id = db.session.scalar(text("SELECT id FROM messages WHERE status = 'superseded'"))
        assert keys == {"superseded": f"reminder:7:20310615T104500:superseded:{superseded_id}",
                        "sent": "confirmation:7:20310101T000000", "pending": "reminder:8:20310615T104500"}
