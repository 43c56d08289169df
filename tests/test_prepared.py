"""Statements run on the driver (prepared.py): what they write and read is what SQLAlchemy's own
execution writes and reads, and their errors are SQLAlchemy's, on both databases."""
from datetime import timedelta, timezone

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.prepared import Prepared
from eventsvc.registrations.models import Registration
from eventsvc.webhooks.models import Webhook
from eventsvc.registrations import services  # noqa: I001 (after the models: it builds statements on import)

from .conftest import admin_connection


def test_a_registration_written_on_the_driver_reads_back_through_the_orm_unchanged(make_event, now):
    event = make_event(capacity=5, starts_at=now + timedelta(days=3), day_before_reminder=True)
    updated_before = event.updated_at
    registered_at = now + timedelta(microseconds=123456)

    result = services.register(event, name="Zoë de Vries", email=" Zoe@Example.org ", organisation="Primair",
                               role="Bestuurder", locale="en", now=registered_at)

    db.session.expire_all()
    registration = db.session.get(Registration, result.registration_id)
    assert (registration.name, registration.email, registration.email_normalized) == \
        ("Zoë de Vries", "Zoe@Example.org", "zoe@example.org")
    assert (registration.status, registration.locale, registration.first_joined_at) == ("confirmed", "en", None)
    assert registration.registered_at == registered_at and registration.registered_at.tzinfo == timezone.utc
    assert registration.consent_at == registered_at
    assert len(registration.token) >= 43
    seat_holder = db.session.get(Event, event.id)
    assert seat_holder.confirmed_count == 1
    assert seat_holder.updated_at > updated_before  # the column's onupdate default, filled in by Prepared

    notices = {m.kind: m for m in db.session.scalars(select(Message).where(Message.registration_id == registration.id))}
    assert set(notices) == {"confirmation", "reminder", "day_before"}
    assert notices["confirmation"].payload == {}
    assert notices["reminder"].payload == {"starts_at": event.starts_at.isoformat()}
    assert notices["day_before"].send_after == event.starts_at - timedelta(days=1)
    assert notices["day_before"].send_after.tzinfo == timezone.utc
    assert len({m.message_id for m in notices.values()}) == 3


def test_the_context_read_converts_each_column_as_sqlalchemy_does(make_event, now):
    event = make_event(capacity=3)
    db.session.add(Webhook(url="https://hooks.example.org/in", secret="s" * 32, is_active=True))
    db.session.commit()
    params = services._context_params("nobody@example.org", now, slug=event.slug)

    context = services._CONTEXT_BY_SLUG.first(db.session.connection(), params)
    expected = db.session.connection().execute(services._CONTEXT_BY_SLUG.statement, params).one()._asdict()
    db.session.rollback()

    assert context == expected
    assert context["any_webhook"] is True and context["existing_id"] is None
    assert context["starts_at"] == event.starts_at and context["starts_at"].tzinfo == timezone.utc
    assert services._CONTEXT_BY_SLUG.first(db.session.connection(), dict(params, slug="no-such-event")) is None
    db.session.rollback()


def test_a_constraint_the_driver_reports_comes_out_as_sqlalchemys_integrity_error(make_event, register, now):
    event = make_event()
    existing = register(event, email="zoe@example.org")
    values = {column.key: getattr(existing, column.key) for column in Registration.__table__.c if column.key != "id"}
    values["token"] = "another-token"

    with pytest.raises(IntegrityError):
        services._INSERT_REGISTRATION.first(db.session.connection(), values)
    db.session.rollback()  # the session goes on as after any failed statement
    assert db.session.scalar(select(Registration.id).where(Registration.event_id == event.id)) == existing.id


@pytest.mark.parametrize("app_config", [{"DATABASE_PING_AFTER_IDLE_SECONDS": 3600}])
def test_a_connection_the_server_dropped_invalidates_the_pool_as_sqlalchemy_does(
        backend, database_url, make_event, now, app_config):
    """Its own connection and every older one in the pool are replaced: after a restart, one
    statement fails, not one per pooled connection. (No ping on checkout here, so only the pool's
    invalidation can save the second connection.)"""
    if backend != "postgresql":
        pytest.skip("closes server connections from the outside")

    event = make_event()
    params = services._context_params("nobody@example.org", now, slug=event.slug)
    db.session.close()
    first, second = db.engine.connect(), db.engine.connect()  # two connections in the pool
    first.exec_driver_sql("SELECT 1"), second.exec_driver_sql("SELECT 1")
    first.close(), second.close()
    with admin_connection(database_url) as admin:
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    with pytest.raises(DBAPIError) as raised:
        services._CONTEXT_BY_SLUG.first(db.session.connection(), params)
    assert raised.value.connection_invalidated
    db.session.rollback()
    one, two = db.engine.connect(), db.engine.connect()
    try:
        assert one.exec_driver_sql("SELECT 1").scalar() == two.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        one.close(), two.close()
    assert services._CONTEXT_BY_SLUG.first(db.session.connection(), params)["id"] == event.id
    db.session.rollback()


def test_a_value_is_converted_as_sqlalchemy_converts_it_none_and_bad_values_included(make_event, register):
    """JSON's None is the JSON text null (the column is NOT NULL), as Connection.execute writes it;
    a naive datetime is refused with SQLAlchemy's StatementError, before anything is written."""
    from sqlalchemy import func
    from sqlalchemy.exc import StatementError

    from eventsvc.outbox import services as outbox
    from eventsvc.types import utcnow

    registration = register(make_event())
    row = outbox.notice("custom", registration=registration, dedupe_key="custom:none-payload")
    statement = outbox._insert_rows_skipping_duplicates(db.session.get_bind().dialect.name)
    assert statement.rowcount_many(db.session.connection(), [dict(row, payload=None)]) == 1
    db.session.commit()
    assert db.session.scalar(select(Message.payload).where(Message.dedupe_key == "custom:none-payload")) is None

    naive = dict(row, dedupe_key="custom:naive", send_after=utcnow().replace(tzinfo=None))
    with pytest.raises(StatementError, match="naive datetime"):
        statement.rowcount_many(db.session.connection(), [naive])
    db.session.rollback()
    assert db.session.scalar(select(func.count()).where(Message.dedupe_key == "custom:naive")) == 0


def test_columns_left_out_get_their_defaults_and_conflicting_rows_are_not_counted(make_event, register, now):
    from eventsvc.outbox import services as outbox

    event = make_event()
    existing = register(event, email="zoe@example.org")
    values = {column.key: getattr(existing, column.key) for column in Registration.__table__.c
              if column.key not in ("id", "organisation", "role", "locale", "token")}
    values.update(email="ada@example.org", email_normalized="ada@example.org")
    new_id = services._INSERT_REGISTRATION.first(db.session.connection(), values)["id"]
    rows = [outbox.notice("custom", registration=existing, dedupe_key=key) for key in ("custom:a", "custom:b")]
    statement = outbox._insert_rows_skipping_duplicates(db.session.get_bind().dialect.name)
    assert statement.rowcount_many(db.session.connection(), rows) == 2
    assert statement.rowcount_many(db.session.connection(), [rows[1], *[
        outbox.notice("custom", registration=existing, dedupe_key="custom:c")]]) == 1  # b is there already
    db.session.commit()

    added = db.session.get(Registration, new_id)
    assert (added.organisation, added.role, added.locale) == ("", "", "nl")
    assert len(added.token) >= 43 and added.token != existing.token


def test_a_statement_whose_text_depends_on_its_parameters_is_refused(app):
    statement = Prepared(select(Event.id).where(Event.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="constant statements"):
        statement.first(db.session.connection(), {"ids": [1, 2]})
    db.session.rollback()
