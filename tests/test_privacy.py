"""Personal data: the privacy statement, erasure by the registrant, purge after the event."""
from datetime import timedelta

from sqlalchemy import select

from eventsvc.auth.services import create_organiser
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration

from .conftest import csrf_token
from .mailtools import deliver


def test_privacy_statement_is_linked_from_the_form_and_editable_by_organisers(client, make_event):
    event = make_event()
    assert "/privacy" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Privacyverklaring" in client.get("/privacy").get_data(as_text=True)
    create_organiser("mieke@example.org", "Mieke", "correct horse battery")
    client.post("/inloggen", data={"email": "mieke@example.org", "password": "correct horse battery",
                                   "csrf_token": csrf_token(client, "/inloggen")})
    response = client.post("/beheer/privacy", data={"title": "Privacy bij de alliantie", "body": "**Wij** bewaren weinig.",
                                                    "csrf_token": csrf_token(client, "/beheer/privacy")})
    assert response.status_code == 303
    page = client.get("/privacy").get_data(as_text=True)
    assert "Privacy bij de alliantie" in page and "<strong>Wij</strong>" in page


def test_consent_is_recorded_with_its_time(make_event, register):
    registration = register(make_event())
    assert registration.consent_at is not None and registration.consent_at == registration.registered_at


def test_registrant_erases_their_own_data_and_the_seat_passes_on(client, smtp, make_event, register):
    event = make_event(capacity=1)
    registration = register(event, name="Zoë de Vries", email="zoe@example.org", organisation="School")
    waiting = register(event, email="waiting@example.org")
    token = registration.token
    assert "Mijn gegevens verwijderen" in client.get(f"/r/{token}").get_data(as_text=True)
    assert client.post(f"/r/{token}/verwijderen").status_code == 400  # CSRF
    response = client.post(f"/r/{token}/verwijderen", data={"csrf_token": csrf_token(client, f"/r/{token}/verwijderen")})
    assert "Uw gegevens zijn verwijderd" in response.get_data(as_text=True)
    db.session.rollback()
    erased = db.session.get(Registration, registration.id)
    assert (erased.name, erased.organisation, erased.status) == ("—", "", "cancelled")
    assert "zoe" not in erased.email and erased.token != token
    assert client.get(f"/r/{token}").status_code == 404
    assert db.session.get(Registration, waiting.id).status == "confirmed"
    deliver()
    assert all("zoe@example.org" not in r.rcpt_tos for r in smtp.messages if r.message["Subject"] != "")
    assert not [r for r in smtp.messages if r.rcpt_tos == ["zoe@example.org"] and "Afmelding" in r.message["Subject"]]


def test_purge_anonymises_past_events_and_keeps_the_counts(app, make_event, register, now):
    past = make_event(starts_at=now + timedelta(minutes=1))
    future = make_event()
    old = register(past, name="Oud", email="oud@example.org")
    recent = register(future, name="Nieuw", email="nieuw@example.org")
    db.session.execute(past.__table__.update().where(past.__table__.c.id == past.id).values(
        starts_at=now - timedelta(days=100), ends_at=now - timedelta(days=100) + timedelta(hours=1)))
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["purge", "--after-days", "90"])
    assert result.exit_code == 0 and "anonymised 1 registrations" in result.output
    again = app.test_cli_runner().invoke(args=["purge"])
    assert "anonymised 0" in again.output
    db.session.rollback()
    gone, kept = db.session.get(Registration, old.id), db.session.get(Registration, recent.id)
    assert gone.name == "—" and gone.status == "confirmed" and "oud" not in gone.email
    assert kept.name == "Nieuw"
    pending = db.session.scalars(select(Message).where(Message.registration_id == old.id,
                                                      Message.status == "pending")).all()
    assert pending == []
