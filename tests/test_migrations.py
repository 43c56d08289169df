"""The migrations and the models describe the same schema, on every backend."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from eventsvc.extensions import db


def test_migrations_match_the_models(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []
