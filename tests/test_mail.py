"""Invites by email through the outbox and the worker, to a real SMTP server."""
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from eventsvc.extensions import db
from eventsvc.outbox.delivery import claim_due
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.registrations.services import cancel_registration

from .conftest import csrf_token
from .mailtools import by_recipient, calendar_parts, deliver, mime_tree, parse_invite, utc, vevent

SUMMER = (datetime(2031, 6, 23, 10, 45, tzinfo=timezone.utc), datetime(2031, 6, 23, 12, 0, tzinfo=timezone.utc))
WINTER = (datetime(2031, 12, 10, 11, 45, tzinfo=timezone.utc), datetime(2031, 12, 10, 13, 0, tzinfo=timezone.utc))


def messages():
    """The outbox, without the reminders that are due only days from now."""
    db.session.rollback()
    return db.session.scalars(select(Message).where(Message.kind != "reminder").order_by(Message.id)).all()


def test_confirmation_carries_a_real_invite(smtp, make_event, register):
    event = make_event(title="Samen onderwijs versnellen", starts_at=SUMMER[0], ends_at=SUMMER[1])
    registration = register(event, name="Gülşen Yılmaz", email="gulsen@example.org")
    assert deliver().sent == 1
    [received] = smtp.wait_for(1)
    mail = received.message
    assert received.rcpt_tos == ["gulsen@example.org"]
    assert mail["Subject"] == "Bevestiging: Samen onderwijs versnellen"
    assert str(mail["To"]) == "Gülşen Yılmaz <gulsen@example.org>"
    assert b"=?utf-8?" in received.data.split(b"\r\n\r\n")[0]  # the name is encoded in the header
    assert mail["Message-ID"].endswith("@eventsvc.test>")
    assert mail["Reply-To"].addresses[0].addr_spec == "mieke@example.org"
    assert mime_tree(mail) == [
        "multipart/mixed", "  multipart/alternative", "    text/plain", "    text/html",
        "    text/calendar", "  application/ics"]
    for part in mail.walk():
        assert part.get("Content-Transfer-Encoding", "7bit").lower() in ("7bit", "quoted-printable", "base64")
    part, calendar, vcal = parse_invite(mail)
    assert part.get_param("method") == "REQUEST" and part.get_content_charset() == "utf-8"
    attachment = calendar_parts(mail)[1]
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_payload(decode=True) == part.get_payload(decode=True)
    entry = vevent(calendar)
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(entry["UID"]) == event.uid and int(entry["SEQUENCE"]) == 0
    assert str(entry["ATTENDEE"]) == "mailto:gulsen@example.org"
    assert entry["ATTENDEE"].params["PARTSTAT"] == "NEEDS-ACTION" and entry["ATTENDEE"].params["RSVP"] == "TRUE"
    assert str(entry["ORGANIZER"]) == "mailto:mieke@example.org"
    assert entry["DTSTART"].params["TZID"] == "Europe/Amsterdam"
    assert (utc(entry["DTSTART"].dt), utc(entry["DTEND"].dt)) == SUMMER
    assert (utc(vcal.vevent.dtstart.value), utc(vcal.vevent.dtend.value)) == SUMMER
    join_link = f"http://eventsvc.test/r/{registration.token}/join"
    assert str(entry["LOCATION"]) == join_link and join_link in str(entry["DESCRIPTION"])
    text = mail.get_body(("plain",)).get_content()
    assert "Beste Gülşen Yılmaz," in text and "maandag 23 juni 2031, 12.45–14.00 uur" in text
    assert f"http://eventsvc.test/r/{registration.token}" in text
    assert event.join_url not in received.data.decode("utf-8", "replace")
    [row] = messages()
    assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None


def test_winter_time_invite_parses_to_the_right_utc_times(smtp, make_event, register):
    event = make_event(starts_at=WINTER[0], ends_at=WINTER[1], mode="onsite", location="Utrecht", join_url="")
    register(event)
    deliver()
    _, calendar, vcal = parse_invite(smtp.wait_for(1)[0].message)
    entry = vevent(calendar)
    assert (utc(entry["DTSTART"].dt), utc(entry["DTEND"].dt)) == WINTER
    assert (utc(vcal.vevent.dtstart.value), utc(vcal.vevent.dtend.value)) == WINTER
    assert str(entry["LOCATION"]) == "Utrecht"
    assert [c.name for c in calendar.subcomponents] == ["VTIMEZONE", "VEVENT"]


def test_waiting_list_mail_has_no_invite_and_promotion_has_one(smtp, make_event, register):
    event = make_event(capacity=1)
    first = register(event, email="first@example.org")
    register(event, email="second@example.org", locale="en")
    deliver()
    cancel_registration(first)
    deliver()
    mails = by_recipient(smtp)
    waitlisted, promoted = mails["second@example.org"]
    assert not calendar_parts(waitlisted)
    assert calendar_parts(promoted)
    confirmation, cancellation = mails["first@example.org"]
    part, calendar, _ = parse_invite(cancellation)
    assert part.get_param("method") == "CANCEL"
    assert str(calendar["METHOD"]) == "CANCEL" and str(vevent(calendar)["STATUS"]) == "CANCELLED"
    assert str(vevent(calendar)["UID"]) == event.uid


def test_english_registrant_gets_english_mail(smtp, make_event, register):
    event = make_event(title="Working together", starts_at=SUMMER[0], ends_at=SUMMER[1])
    register(event, name="Ruud van 't Hof", locale="en")
    deliver()
    mail = smtp.wait_for(1)[0].message
    text = mail.get_body(("plain",)).get_content()
    assert mail["Subject"] == "Confirmed: Working together"
    assert "Dear Ruud van 't Hof," in text and "Monday 23 June 2031, 12:45–14:00" in text


def test_already_registered_mail_repeats_the_personal_links(smtp, make_event, register):
    event = make_event()
    registration = register(event, email="zoe@example.org")
    register(event, email=" Zoe@Example.org")
    deliver()
    confirmation, repeat = by_recipient(smtp)["zoe@example.org"]
    assert repeat["Subject"].startswith("U bent al aangemeld")
    assert f"/r/{registration.token}" in repeat.get_body(("plain",)).get_content()


def test_crlf_in_stored_fields_cannot_inject_headers(smtp, make_event, register):
    event = make_event(title="Titel\r\nBcc: victim@example.org")
    registration = register(event, name="Zoë")
    db.session.execute(update(Registration).values(name="Zoë\r\nBcc: victim@example.org"))
    db.session.commit()
    deliver()
    [received] = smtp.wait_for(1)
    assert received.rcpt_tos == [registration.email]
    mail = received.message
    assert mail["Bcc"] is None and len(mail["To"].addresses) == 1
    assert mail["To"].addresses[0].addr_spec == registration.email
    assert "\n" not in mail["Subject"] and "\n" not in mail["To"]


def test_long_accented_subject_keeps_its_spaces(smtp, make_event, register):
    title = "Café-webinar “Samen sterker” – woensdag 23 juni voor schoolbesturen en gemeenten 🎉"
    register(make_event(title=title))
    deliver()
    assert smtp.wait_for(1)[0].message["Subject"] == f"Bevestiging: {title}"


def test_worker_running_twice_or_concurrently_sends_each_notice_once(app, smtp, make_event, register):
    event = make_event()
    for _ in range(30):
        register(event)
    db.session.remove()

    errors = []

    def work():
        with app.app_context():
            try:
                deliver(batch_size=5)
            except Exception as error:
                errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    deliver()
    assert smtp.count == 30
    assert len({r.message["Message-ID"] for r in smtp.messages}) == 30
    assert {m.status for m in messages()} == {"sent"}


def test_refused_then_accepted_is_retried_and_delivered(smtp, make_event, register):
    register(make_event())
    smtp.fail_next_data.append((451, "4.3.0 Try again later"))
    totals = deliver()
    assert totals.retried == 1 and smtp.count == 0
    [row] = messages()
    assert row.status == "pending" and row.attempts == 1 and "451" in row.last_error
    assert row.send_after > datetime.now(timezone.utc)  # backed off
    db.session.execute(update(Message).where(Message.kind != "reminder")
                       .values(send_after=datetime.now(timezone.utc)))  # time passes
    db.session.commit()
    deliver()
    assert smtp.count == 1 and messages()[0].status == "sent"


def test_permanent_refusal_fails_only_that_message(smtp, make_event, register):
    event = make_event()
    register(event, email="bad@example.org")
    register(event, email="good@example.org")
    smtp.refuse_rcpt["bad@example.org"] = (550, "5.1.1 No such user")
    deliver()
    rows = {m.registration.email: m for m in messages()}
    assert rows["bad@example.org"].status == "failed" and "550" in rows["bad@example.org"].last_error
    assert rows["good@example.org"].status == "sent"
    assert [r.rcpt_tos for r in smtp.messages] == [["good@example.org"]]


def test_failed_after_the_last_attempt(app, smtp, make_event, register):
    app.config["OUTBOX_MAX_ATTEMPTS"] = 3
    register(make_event())
    for _ in range(3):
        smtp.fail_next_data.append((452, "4.2.2 Mailbox full"))
        db.session.execute(update(Message).where(Message.kind != "reminder")
                           .values(send_after=datetime.now(timezone.utc)))
        db.session.commit()
        deliver()
    [row] = messages()
    assert row.status == "failed" and row.attempts == 3 and "452" in row.last_error
    assert smtp.count == 0


def test_unreachable_server_spends_no_attempts_and_delivers_when_back(app, make_event, register):
    from eventsvc.devmail.sink import MailSink

    for _ in range(5):
        register(make_event())
    app.config["MAIL_PORT"] = 1
    app.extensions["mail"].port = 1  # nothing listens there
    totals = deliver()
    assert totals.sent == 0
    assert {(m.status, m.attempts, m.locked_by) for m in messages()} == {("pending", 0, None)}
    with MailSink() as sink:
        app.extensions["mail"].port = sink.port
        deliver()
        assert sink.count == 5
    assert {m.status for m in messages()} == {"sent"}


def test_rows_of_a_dead_worker_are_delivered_after_its_lease(smtp, make_event, register):
    register(make_event())
    assert len(claim_due("dead-worker:1", limit=10)) == 1  # it claimed, then died
    assert deliver().sent == 0  # leased: nobody else touches it yet
    db.session.execute(update(Message).values(locked_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    db.session.commit()
    assert deliver().sent == 1 and smtp.count == 1


def test_personal_page_cancel_frees_the_seat_and_promotes(client, smtp, make_event, register):
    event = make_event(capacity=1)
    first = register(event, email="first@example.org")
    second = register(event, email="second@example.org")
    page = client.get(f"/r/{first.token}")
    assert page.status_code == 200 and page.headers["Referrer-Policy"] == "no-referrer"
    assert "first@example.org" in page.get_data(as_text=True)
    confirm = client.get(f"/r/{first.token}/annuleren").get_data(as_text=True)
    assert "Weet u zeker" in confirm
    assert client.post(f"/r/{first.token}/annuleren").status_code == 400  # no CSRF token
    token = csrf_token(client, f"/r/{first.token}/annuleren")
    response = client.post(f"/r/{first.token}/annuleren", data={"csrf_token": token})
    assert response.status_code == 303
    db.session.rollback()
    assert (db.session.get(Registration, first.id).status, db.session.get(Registration, second.id).status) == \
        ("cancelled", "confirmed")
    deliver()
    kinds = {(r.rcpt_tos[0], parse_invite(r.message)[0].get_param("method")) for r in smtp.messages
             if calendar_parts(r.message)}
    assert ("first@example.org", "CANCEL") in kinds and ("second@example.org", "REQUEST") in kinds


def test_personal_calendar_has_the_same_uid_and_sequence(client, make_event, register):
    import icalendar

    event = make_event(sequence=3)
    registration = register(event)
    response = client.get(f"/r/{registration.token}/agenda.ics")
    assert response.mimetype == "text/calendar"
    entry = vevent(icalendar.Calendar.from_ical(response.data))
    assert str(entry["UID"]) == event.uid and int(entry["SEQUENCE"]) == 3
    assert f"/r/{registration.token}/join" in str(entry["LOCATION"])


@pytest.mark.parametrize("token", ["nope", "x" * 43, "x" * 500, "../etc"])
def test_forged_tokens_are_not_found(client, make_event, register, token):
    register(make_event())
    assert client.get(f"/r/{token}").status_code == 404
