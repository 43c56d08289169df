"""Operator commands through Flask's CLI runner: same services as the web pages."""
import csv
import io
from datetime import datetime

from sqlalchemy import func, select

from eventsvc.auth.models import Organiser
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message

from .mailtools import deliver, parse_invite, vevent


def run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def test_organiser_create_generates_a_password_and_refuses_duplicates(app):
    result = run(app, "organiser", "create", "Mieke@Example.org", "--name", "Mieke van den Berg")
    assert result.exit_code == 0 and "password: " in result.output
    password = result.output.split("password: ")[1].strip()
    assert db.session.scalar(select(Organiser)).check_password(password)
    again = run(app, "organiser", "create", "mieke@example.org", "--name", "M")
    assert again.exit_code == 1 and "Er is al een organisator" in again.output


def test_demo_is_idempotent_and_prints_the_organiser_login(app):
    first, second = run(app, "demo"), run(app, "demo")
    assert first.exit_code == second.exit_code == 0
    assert "organisator@example.org" in second.output
    assert db.session.scalar(select(func.count()).select_from(Event)) == 3
    event = db.session.scalar(select(Event).where(Event.slug == "samen-onderwijs-versnellen"))
    assert event.contact_name == "Mieke van den Berg" and event.mode == "online" and event.is_published


def test_event_list_reschedule_cancel_and_export(app, smtp, make_event, register):
    event = make_event(slug="samen", title="Samen onderwijs versnellen")
    register(event, name="Zoë", email="zoe@example.org")
    deliver()
    smtp.clear()
    assert "samen\tpublished" in run(app, "event", "list").output
    result = run(app, "event", "reschedule", "samen", "--start", "2031-06-23T12:45", "--end", "2031-06-23T14:00",
                 "--reason", "het webinar van het ministerie van OCW")
    assert result.exit_code == 0 and "1 notices queued" in result.output
    deliver()
    entry = vevent(parse_invite(smtp.wait_for(1)[0].message)[1])
    assert entry["DTSTART"].dt.replace(tzinfo=None) == datetime(2031, 6, 23, 12, 45)
    bad = run(app, "event", "reschedule", "samen", "--start", "23-06-2031", "--end", "x", "--reason", "r")
    assert bad.exit_code == 2 and "is not a date and time" in bad.output
    export = run(app, "registrations", "export", "samen")
    rows = list(csv.reader(io.StringIO(export.output.lstrip("\ufeff")), delimiter=";"))
    assert rows[1][:2] == ["Zoë", "zoe@example.org"]
    assert run(app, "event", "cancel", "samen", "--reason", "ziek").exit_code == 0
    assert run(app, "event", "cancel", "samen", "--reason", "ziek").exit_code == 1
    assert run(app, "event", "cancel", "bestaat-niet", "--reason", "x").exit_code == 1
    db.session.rollback()
    kinds = db.session.scalars(select(Message.kind).where(Message.status == "pending")).all()
    assert kinds.count("cancelled") == 1
