"""Registering through the form, as a person at the keyboard would."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.registrations.services import cancel_registration

from .conftest import csrf_token


def post_form(client, event, **fields):
    data = {"name": "Zoë de Vries", "email": "zoe@example.org", "organisation": "Stichting Primair",
            "role": "Bestuurder", "consent": "y"}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    if "csrf_token" not in data:
        data["csrf_token"] = csrf_token(client, f"/e/{event.slug}")
    return client.post(f"/e/{event.slug}", data=data)


def registrations():
    return db.session.scalars(select(Registration).order_by(Registration.id)).all()


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_registration_lands_in_the_database_and_shows_a_confirmation(client, make_event):
    event = make_event()
    response = post_form(client, event)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Bedankt voor uw aanmelding" in page and "zoe@example.org" in page
    [registration] = registrations()
    assert (registration.name, registration.status, registration.email_normalized) == \
        ("Zoë de Vries", "confirmed", "zoe@example.org")
    assert registration.consent_at is not None
    assert len(registration.token) >= 43  # 256 bits, URL-safe
    assert sorted(m.kind for m in db.session.scalars(select(Message))) == ["confirmation", "reminder"]


def test_full_event_puts_the_registrant_on_the_waiting_list(client, make_event, register):
    event = make_event(capacity=1)
    register(event)
    response = post_form(client, event)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "U staat op de wachtlijst" in page
    assert [r.status for r in registrations()] == ["confirmed", "waitlisted"]
    assert db.session.get(Event, event.id).confirmed_count == 1
    # The waiting list's notice only: nothing of a confirmation is left queued for them.
    waiting = registrations()[1]
    assert [(m.kind, m.status) for m in outbox_of(waiting)] == [("waitlisted", "pending")]


def outbox_of(registration):
    return db.session.scalars(select(Message).where(Message.registration_id == registration.id)
                              .order_by(Message.id)).all()


def test_a_revived_registration_on_a_full_event_keeps_its_history_and_waits(client, make_event, register):
    event = make_event(capacity=1)
    zoe = register(event, email="zoe@example.org")
    cancel_registration(zoe)
    register(event, email="someone.else@example.org")  # takes the freed seat
    post_form(client, event)  # Zoë again: now there is no seat
    db.session.expire_all()
    assert db.session.get(Registration, zoe.id).status == "waitlisted"
    assert [(m.kind, m.status) for m in outbox_of(zoe)] == [
        ("confirmation", "superseded"), ("reminder", "superseded"), ("registration_cancelled", "pending"),
        ("waitlisted", "pending")]


def test_a_revived_registration_gets_its_join_link_reminder_again(client, make_event, register):
    event = make_event()
    zoe = register(event, email="zoe@example.org")
    cancel_registration(zoe)
    post_form(client, event)
    db.session.expire_all()
    pending = sorted(m.kind for m in outbox_of(zoe) if m.status == "pending")
    assert pending == ["confirmation", "registration_cancelled", "reminder"]


def test_duplicate_registration_writes_no_second_row_and_reveals_nothing(client, make_event, register):
    event = make_event()
    register(event, email="zoe@example.org")
    fresh = post_form(client, event, email="someone.new@example.org")
    fresh_page = client.get(fresh.headers["Location"]).get_data(as_text=True)
    repeat = post_form(client, event, email="  ZOE@Example.org ")
    repeat_page = client.get(repeat.headers["Location"]).get_data(as_text=True)
    assert fresh.status_code == repeat.status_code == 303
    assert fresh_page.replace("someone.new@example.org", "X") == repeat_page.replace("ZOE@Example.org", "X")
    assert count(Registration) == 2
    kinds = sorted(m.kind for m in db.session.scalars(select(Message)) if m.kind != "reminder")
    assert kinds == ["already_registered", "confirmation", "confirmation"]


def test_registering_again_after_cancelling_revives_the_same_row(client, make_event, register):
    event = make_event()
    registration = register(event, email="zoe@example.org")
    cancel_registration(registration)
    post_form(client, event)
    [revived] = registrations()
    assert revived.id == registration.id and revived.status == "confirmed"
    assert db.session.get(Event, event.id).confirmed_count == 1


def test_cancelling_frees_the_seat_and_promotes_the_first_on_the_waiting_list(make_event, register):
    event = make_event(capacity=1)
    first = register(event)
    second, third = register(event), register(event)
    assert (second.status, third.status) == ("waitlisted", "waitlisted")
    promoted = cancel_registration(first)
    assert promoted.id == second.id
    db.session.rollback()  # end the read snapshot, expire everything
    assert [r.status for r in registrations()] == ["cancelled", "confirmed", "waitlisted"]
    assert db.session.get(Event, event.id).confirmed_count == 1
    kinds = [m.kind for m in db.session.scalars(select(Message).order_by(Message.id))]
    assert kinds.count("promoted") == 1 and kinds.count("registration_cancelled") == 1


def test_cancelling_a_waitlisted_registration_keeps_the_seats(make_event, register):
    event = make_event(capacity=1)
    register(event)
    second = register(event)
    assert cancel_registration(second) is None
    db.session.rollback()  # end the read snapshot, expire everything
    assert [r.status for r in registrations()] == ["confirmed", "cancelled"]


def test_newcomer_does_not_jump_the_waiting_list(make_event, register):
    event = make_event(capacity=1)
    register(event)
    waiting = register(event)
    db.session.execute(Event.__table__.update().values(capacity=2))  # a seat appears outside the rules
    db.session.commit()
    newcomer = register(event)
    assert waiting.status == "waitlisted" and newcomer.status == "waitlisted"


@pytest.mark.parametrize("fields, message", [
    ({"name": ""}, "Vul uw naam in."),
    ({"name": "x" * 201}, "Uw naam mag hoogstens 200 tekens lang zijn."),
    ({"name": "Zoë\r\nBcc: victim@example.org"}, "geen regeleinden of stuurtekens"),
    ({"name": "Nul\x00byte"}, "geen regeleinden of stuurtekens"),
    ({"email": ""}, "Vul uw e-mailadres in."),
    ({"email": "geen-adres"}, "Vul een geldig e-mailadres in"),
    ({"email": "a@b@example.org"}, "Vul een geldig e-mailadres in"),
    ({"email": "zoe@example.org\r\nBcc: x@example.org"}, "Vul een geldig e-mailadres in"),
    ({"email": "x" * 250 + "@example.org"}, "hoogstens 254 tekens"),
    ({"organisation": "o" * 201}, "hoogstens 200 tekens"),
    ({"role": "Directeur\nBestuurder"}, "geen regeleinden of stuurtekens"),
    ({"consent": None}, "Geef aan dat u akkoord gaat met de privacyverklaring."),
])
def test_bad_input_gets_a_dutch_message_and_writes_nothing(client, make_event, fields, message):
    event = make_event()
    response = post_form(client, event, **fields)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert "Er is een probleem" in page
    assert count(Registration) == 0 and count(Message) == 0


def test_missing_or_wrong_csrf_token_is_refused(client, make_event):
    event = make_event()
    client.get(f"/e/{event.slug}")
    for token in ("", "forged-token"):
        response = post_form(client, event, csrf_token=token)
        assert response.status_code == 400
        assert "Ongeldig verzoek" in response.get_data(as_text=True)
    assert count(Registration) == 0


def test_unknown_event_is_404(client, make_event):
    token = csrf_token(client, f"/e/{make_event().slug}")
    assert client.post("/e/bestaat-niet", data={"name": "x", "csrf_token": token}).status_code == 404


@pytest.mark.parametrize("setup, message", [
    (lambda now: {"status": "cancelled"}, "geannuleerd"),
    (lambda now: {"starts_at": now - timedelta(minutes=5)}, "al begonnen of voorbij"),
    (lambda now: {"registration_opens_at": now + timedelta(days=1)}, "Aanmelden kan vanaf"),
    (lambda now: {"registration_closes_at": now - timedelta(hours=1)}, "is gesloten"),
])
def test_registration_window_is_enforced(client, make_event, now, setup, message):
    event = make_event(**setup(now))
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert message in page and 'name="email"' not in page
    token = csrf_token(client, f"/e/{make_event().slug}")  # a valid token from an open event
    response = post_form(client, event, csrf_token=token)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert count(Registration) == 0


def test_service_refuses_drafts(make_event, register):
    from eventsvc.errors import ServiceError

    event = make_event(status="draft")
    with pytest.raises(ServiceError, match="nog niet mogelijk"):
        register(event)
    assert count(Registration) == 0


def test_service_refuses_an_event_deleted_since_the_caller_read_it(make_event, register):
    from eventsvc.errors import NotFound

    event = make_event()
    with db.engine.begin() as other:  # another request deletes it after this one read it
        other.execute(Event.__table__.delete().where(Event.__table__.c.id == event.id))
    with pytest.raises(NotFound, match="bestaat niet meer"):
        register(event)
    assert count(Registration) == 0
