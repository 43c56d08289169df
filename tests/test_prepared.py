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


def test_a_connection_the_server_dropped_is_invalidated_and_the_next_transaction_gets_a_new_one(
        backend, database_url, make_event, now):
    if backend != "postgresql":
        pytest.skip("closes a server connection from the outside")
    import psycopg

    event = make_event()
    params = services._context_params("nobody@example.org", now, slug=event.slug)
    connection = db.session.connection()
    pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database_url.rsplit('/', 1)[1]}",
                         autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]

    with pytest.raises(DBAPIError) as raised:
        services._CONTEXT_BY_SLUG.first(connection, params)
    assert raised.value.connection_invalidated
    db.session.rollback()
    assert services._CONTEXT_BY_SLUG.first(db.session.connection(), params)["id"] == event.id
    db.session.rollback()


def test_a_statement_whose_text_depends_on_its_parameters_is_refused(app):
    statement = Prepared(select(Event.id).where(Event.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="constant statements"):
        statement.first(db.session.connection(), {"ids": [1, 2]})
    db.session.rollback()
