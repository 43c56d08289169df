"""The organiser workspace through the test client, with the real SMTP server."""
import csv
import io
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from eventsvc.auth.services import create_organiser
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration

from .conftest import csrf_token
from .mailtools import by_recipient, deliver, parse_invite, utc, vevent

PASSWORD = "correct horse battery"


@pytest.fixture
def organiser(app):
    return create_organiser("mieke@example.org", "Mieke van den Berg", PASSWORD)[0]


@pytest.fixture
def logged_in(client, organiser):
    token = csrf_token(client, "/inloggen")
    response = client.post("/inloggen", data={"email": "mieke@example.org", "password": PASSWORD,
                                              "csrf_token": token})
    assert response.status_code == 303
    return client


def post(client, path, form_page=None, **data):
    data["csrf_token"] = csrf_token(client, form_page or path)
    return client.post(path, data=data)


def count(model, *where):
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_every_organiser_route_refuses_anonymous_users(app, client, make_event, register):
    event = make_event()
    registration = register(event)
    values = {"event_id": event.id, "registration_id": registration.id, "token_id": 1, "webhook_id": 1}
    token = csrf_token(client, f"/e/{event.slug}")  # a valid token: only the login guard may refuse
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin."):
            continue
        url = rule.build(values)[1]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(url, method=method, data={"csrf_token": token, "reason": "x"})
            assert response.status_code in (302, 401), (method, url)
            if response.status_code == 302:
                assert "/inloggen" in response.headers["Location"]
            checked += 1
    assert checked >= 15
    assert count(Registration, Registration.status == "cancelled") == 0


def test_login_logout_and_logged_out_requests_are_refused(client, organiser, make_event):
    make_event()
    token = csrf_token(client, "/inloggen")
    response = client.post("/inloggen?next=/beheer/", data={"email": "MIEKE@example.org ", "password": PASSWORD,
                                                              "csrf_token": token})
    assert response.headers["Location"] == "/beheer/"
    assert "Bijeenkomst 1" in client.get("/beheer/").get_data(as_text=True)
    post(client, "/uitloggen", form_page="/beheer/")
    assert client.get("/beheer/").status_code == 302


def test_wrong_password_is_refused_and_locks_after_five_attempts(client, organiser):
    for _ in range(5):
        response = post(client, "/inloggen", email="mieke@example.org", password="wrong password!")
        assert response.status_code == 422
        assert "Onjuist e-mailadres of wachtwoord." in response.get_data(as_text=True)
    response = post(client, "/inloggen", email="mieke@example.org", password=PASSWORD)
    assert "Te veel mislukte pogingen" in response.get_data(as_text=True)
    assert client.get("/beheer/").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(client, organiser, target):
    token = csrf_token(client, "/inloggen")
    response = client.post(f"/inloggen?next={target}", data={"email": "mieke@example.org", "password": PASSWORD,
                                                               "csrf_token": token})
    assert response.headers["Location"] == "/beheer/"


def event_form(**overrides):
    data = {"title": "Samen onderwijs versnellen", "summary": "Online bijeenkomst", "description": "**Programma**",
            "audience": "Schoolbestuurders", "organised_by": "Sardes, CAOP en Kennisland",
            "contact_name": "Mieke van den Berg", "contact_email": "mieke@example.org", "mode": "online",
            "join_url": "https://meet.example.org/geheim", "timezone": "Europe/Amsterdam",
            "date": "2031-06-15", "start": "12:45", "end": "14:00", "capacity": "40"}
    data.update(overrides)
    return data


def test_create_publish_and_show_an_event(logged_in):
    response = post(logged_in, "/beheer/nieuw", **event_form())
    assert response.status_code == 303
    event = db.session.scalar(select(Event))
    assert (event.status, event.slug, event.capacity) == ("draft", "samen-onderwijs-versnellen", 40)
    assert utc(event.starts_at) == datetime(2031, 6, 15, 10, 45, tzinfo=timezone.utc)
    assert logged_in.get(f"/e/{event.slug}").status_code == 404  # a draft is not public
    post(logged_in, f"/beheer/{event.id}/publiceren", form_page=f"/beheer/{event.id}")
    assert "zondag 15 juni 2031, 12.45–14.00 uur" in logged_in.get(f"/e/{event.slug}").get_data(as_text=True)


@pytest.mark.parametrize("overrides, message", [
    ({"title": ""}, "Dit veld is verplicht."),
    ({"end": "12:00"}, "Het einde moet na het begin liggen."),
    ({"timezone": "Mars/Olympus"}, "Kies een geldige tijdzone"),
    ({"capacity": "-1"}, "Kies een aantal tussen 0 en 100000"),
    ({"capacity": "99999999999"}, "Kies een aantal tussen 0 en 100000"),
    ({"date": "2031-02-30"}, "Vul een geldige datum in."),
    ({"join_url": "javascript:alert(1)"}, "begint met https://"),
    ({"contact_email": "geen adres"}, "Vul een geldig e-mailadres in"),
    ({"title": "x" * 201}, "Hoogstens 200 tekens."),
    ({"title": "Titel\r\nmet regeleinde"}, "geen regeleinden"),
])
def test_bad_event_input_gets_a_clear_message_and_writes_nothing(logged_in, overrides, message):
    response = post(logged_in, "/beheer/nieuw", **event_form(**overrides))
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert count(Event) == 0


def test_publishing_an_online_event_needs_a_join_url(logged_in):
    post(logged_in, "/beheer/nieuw", **event_form(join_url=""))
    event = db.session.scalar(select(Event))
    response = post(logged_in, f"/beheer/{event.id}/publiceren", form_page=f"/beheer/{event.id}")
    page = logged_in.get(response.headers["Location"]).get_data(as_text=True)
    assert "Vul eerst de link voor deelname in" in page
    assert count(Event, Event.status == "published") == 0


def test_capacity_cannot_go_below_the_confirmed_count_and_raising_it_promotes(logged_in, make_event, register):
    event = make_event(capacity=2, starts_at=datetime(2031, 3, 3, 9, 0, tzinfo=timezone.utc))
    register(event), register(event)
    waiting = register(event)
    local = event.starts_at.astimezone(event.tz)
    same_time = dict(date=local.strftime("%Y-%m-%d"), start=local.strftime("%H:%M"),
                     end=event.ends_at.astimezone(event.tz).strftime("%H:%M"))
    moved = post(logged_in, f"/beheer/{event.id}/bewerken", **event_form(capacity="2", date="2031-06-15"))
    assert moved.status_code == 422 and "gebruik ‘Verplaatsen’" in moved.get_data(as_text=True)
    response = post(logged_in, f"/beheer/{event.id}/bewerken", **event_form(capacity="1", **same_time))
    assert response.status_code == 422 and "niet lager zijn dan het aantal aanmeldingen (2)" in response.get_data(as_text=True)
    post(logged_in, f"/beheer/{event.id}/bewerken", **event_form(capacity="3", **same_time))
    db.session.rollback()
    assert db.session.get(Registration, waiting.id).status == "confirmed"


def test_reschedule_moves_every_calendar_entry_and_tells_everyone_once(logged_in, smtp, make_event, register):
    event = make_event(title="Samen onderwijs versnellen", capacity=1,
                       starts_at=datetime(2031, 6, 15, 10, 45, tzinfo=timezone.utc),
                       ends_at=datetime(2031, 6, 15, 12, 0, tzinfo=timezone.utc))
    confirmed = register(event, email="confirmed@example.org")
    register(event, email="waiting@example.org")
    deliver()
    smtp.clear()
    page = logged_in.get(f"/beheer/{event.id}/verplaatsen").get_data(as_text=True)
    assert "2 deelnemers krijgen bericht" in page
    reason = "het webinar van het ministerie van OCW"
    response = post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-23", start="12:45", end="14:00",
                    reason=reason)
    assert response.status_code == 303
    # the same move again tells nobody twice
    again = post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-23", start="12:45", end="14:00",
                 reason=reason)
    assert again.status_code == 422 and "staat al op dit tijdstip" in again.get_data(as_text=True)
    deliver()
    mails = by_recipient(smtp)
    assert sorted(mails) == ["confirmed@example.org", "waiting@example.org"]
    [notice] = mails["confirmed@example.org"]
    assert notice["Subject"] == "Gewijzigd: Samen onderwijs versnellen"
    _, calendar, vcal = parse_invite(notice)
    entry = vevent(calendar)
    assert str(calendar["METHOD"]) == "REQUEST" and str(entry["UID"]) == event.uid
    assert int(entry["SEQUENCE"]) == 1
    assert entry["DTSTART"].params["TZID"] == "Europe/Amsterdam"
    assert entry["DTSTART"].dt.replace(tzinfo=None) == datetime(2031, 6, 23, 12, 45)
    assert utc(vcal.vevent.dtstart.value) == datetime(2031, 6, 23, 10, 45, tzinfo=timezone.utc)
    text = notice.get_body(("plain",)).get_content()
    assert "maandag 23 juni 2031, 12.45–14.00 uur" in text and "zondag 15 juni 2031" in text and reason in text
    public = logged_in.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Verplaatst" in public and "<s>zondag 15 juni 2031, 12.45 uur</s>" in public and reason in public
    # "I can no longer come" gives the seat to the first on the waiting list
    smtp.clear()
    response = post(logged_in, f"/r/{confirmed.token}/annuleren")
    assert response.status_code == 303
    deliver()
    mails = by_recipient(smtp)
    assert parse_invite(mails["confirmed@example.org"][0])[0].get_param("method") == "CANCEL"
    promoted_invite = vevent(parse_invite(mails["waiting@example.org"][0])[1])
    assert int(promoted_invite["SEQUENCE"]) == 1


def test_a_second_reschedule_before_sending_supersedes_the_first(logged_in, smtp, make_event, register):
    event = make_event()
    register(event)
    deliver()
    smtp.clear()
    post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-23", start="12:45", end="14:00", reason="a")
    post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-30", start="12:45", end="14:00", reason="b")
    deliver()
    [notice] = [r.message for r in smtp.messages]
    assert int(vevent(parse_invite(notice)[1])["SEQUENCE"]) == 2
    assert count(Message, Message.kind == "rescheduled", Message.status == "superseded") == 1


def test_still_attending_is_recorded(logged_in, make_event, register):
    event = make_event()
    registration = register(event)
    post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-23", start="12:45", end="14:00", reason="x")
    post(logged_in, f"/r/{registration.token}/nog-steeds")
    db.session.rollback()
    assert db.session.get(Registration, registration.id).reschedule_response == "attending"
    assert "komt" in logged_in.get(f"/beheer/{event.id}").get_data(as_text=True)
    # The next move asks again: the answer was about the previous time.
    post(logged_in, f"/beheer/{event.id}/verplaatsen", date="2031-06-30", start="12:45", end="14:00", reason="y")
    db.session.rollback()
    answered = db.session.get(Registration, registration.id)
    assert (answered.reschedule_response, answered.reschedule_response_at) == (None, None)


def test_cancel_an_event_sends_method_cancel_to_all(logged_in, smtp, make_event, register):
    event = make_event(capacity=1)
    register(event, email="a@example.org")
    register(event, email="b@example.org")
    deliver()
    smtp.clear()
    missing = post(logged_in, f"/beheer/{event.id}/annuleren", reason="")
    assert missing.status_code == 422 and count(Event, Event.status == "cancelled") == 0
    post(logged_in, f"/beheer/{event.id}/annuleren", reason="te weinig aanmeldingen")
    deliver()
    mails = by_recipient(smtp)
    cancel = mails["a@example.org"][0]
    part, calendar, _ = parse_invite(cancel)
    assert part.get_param("method") == "CANCEL" and str(vevent(calendar)["STATUS"]) == "CANCELLED"
    assert int(vevent(calendar)["SEQUENCE"]) == 1
    assert mails["b@example.org"][0]["Subject"].startswith("Geannuleerd")
    page = logged_in.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Geannuleerd" in page and "te weinig aanmeldingen" in page and 'name="email"' not in page
    assert count(Message, Message.kind == "reminder", Message.status == "pending") == 0


def test_registrations_list_search_and_csv_export(logged_in, make_event, register):
    event = make_event()
    register(event, name="Gülşen Yılmaz", email="gulsen@example.org", organisation="=HYPERLINK(\"x\")")
    register(event, name="Ruud van 't Hof", email="ruud@example.org")
    page = logged_in.get(f"/beheer/{event.id}?q=gülşen").get_data(as_text=True)
    assert "Gülşen Yılmaz" in page and "Ruud" not in page
    # LIKE's wildcards are searched for as they are, not matched against everyone.
    for wildcard in ("_", "%25", "!"):
        page = logged_in.get(f"/beheer/{event.id}?q={wildcard}").get_data(as_text=True)
        assert "Gülşen" not in page and "Ruud" not in page, wildcard
    assert "Ruud van" in logged_in.get(f"/beheer/{event.id}?q='t h").get_data(as_text=True)
    response = logged_in.get(f"/beheer/{event.id}/aanmeldingen.csv")
    assert response.mimetype == "text/csv"
    body = response.data.decode("utf-8")
    assert body.startswith("\ufeff") and "\r\n" in body
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff")), delimiter=";"))
    assert rows[0][:2] == ["Naam", "E-mailadres"]
    assert rows[1][0] == "Gülşen Yılmaz" and rows[1][2].startswith("'=")
    assert rows[2][0] == "Ruud van 't Hof"


def test_organiser_cancels_and_promotes_registrations(logged_in, make_event, register):
    event = make_event(capacity=1)
    first, second = register(event), register(event)
    response = post(logged_in, f"/beheer/{event.id}/aanmeldingen/{second.id}/plaatsen", form_page=f"/beheer/{event.id}")
    assert "Er is geen plaats vrij" in logged_in.get(response.headers["Location"]).get_data(as_text=True)
    post(logged_in, f"/beheer/{event.id}/aanmeldingen/{first.id}/annuleren", form_page=f"/beheer/{event.id}")
    db.session.rollback()
    assert (db.session.get(Registration, first.id).status, db.session.get(Registration, second.id).status) == \
        ("cancelled", "confirmed")


def test_actions_on_a_missing_event_or_foreign_registration_are_404(logged_in, make_event, register):
    event, other = make_event(), make_event()
    foreign = register(other)
    assert logged_in.get("/beheer/9999").status_code == 404
    assert post(logged_in, "/beheer/9999/annuleren", form_page="/beheer/", reason="x").status_code == 404
    assert post(logged_in, f"/beheer/{event.id}/aanmeldingen/{foreign.id}/annuleren",
                form_page="/beheer/").status_code == 404
    assert count(Registration, Registration.status == "cancelled") == 0


def test_delivery_state_and_retry(logged_in, smtp, make_event, register):
    event = make_event()
    register(event, email="bad@example.org")
    smtp.refuse_rcpt["bad@example.org"] = (550, "5.1.1 No such user")
    deliver()
    page = logged_in.get(f"/beheer/{event.id}/berichten").get_data(as_text=True)
    assert "failed" in page and "550 5.1.1 No such user" in page
    smtp.refuse_rcpt.clear()
    post(logged_in, f"/beheer/{event.id}/berichten/opnieuw", form_page=f"/beheer/{event.id}/berichten")
    deliver()
    assert smtp.count == 1


def test_message_all_registrants_with_preview(logged_in, smtp, make_event, register):
    event = make_event(capacity=1)
    register(event, email="a@example.org")
    register(event, email="b@example.org")
    deliver()
    smtp.clear()
    preview = post(logged_in, f"/beheer/{event.id}/bericht", subject="Programma", body="Tot dan!", action="preview")
    assert "Voorbeeld" in preview.get_data(as_text=True) and count(Message, Message.kind == "custom") == 0
    post(logged_in, f"/beheer/{event.id}/bericht", subject="Programma", body="Tot dan!", action="send")
    deliver()
    assert [r.rcpt_tos for r in smtp.messages] == [["a@example.org"]]
    assert smtp.messages[0].message["Subject"] == "Programma"


def test_duplicate_and_unpublish(logged_in, make_event):
    event = make_event()
    post(logged_in, f"/beheer/{event.id}/dupliceren", form_page=f"/beheer/{event.id}")
    copy = db.session.scalar(select(Event).where(Event.id != event.id))
    assert copy.title.endswith("(kopie)") and copy.status == "draft" and copy.uid != event.uid
    post(logged_in, f"/beheer/{event.id}/verbergen", form_page=f"/beheer/{event.id}")
    db.session.rollback()
    assert db.session.get(Event, event.id).status == "draft"
