"""Personal join links, reminders that follow the schedule, calendar links and feeds."""
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest
from sqlalchemy import select, update

from eventsvc.events.management import cancel_event, reschedule_event
from eventsvc.extensions import db
from eventsvc.outbox.delivery import BatchResult, _prepare
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.registrations.services import cancel_registration, join_state

from .mailtools import by_recipient, deliver, read_with_vobject, vevent

SECRET = "https://meet.example.org/secret-room-42"


def opens(event, minutes=15):
    return event.starts_at - timedelta(minutes=minutes)


@pytest.mark.parametrize("offset, state", [
    (timedelta(minutes=-15, seconds=-1), "not_yet"),
    (timedelta(minutes=-15), "open"),
    (timedelta(0), "open"),
    (timedelta(hours=1, minutes=14, seconds=59), "open"),
    (timedelta(hours=1, minutes=15), "ended"),
])
def test_join_window_edges_with_the_clock_passed_in(make_event, register, offset, state):
    event = make_event()  # 1 h 15 min long
    registration = register(event)
    assert join_state(registration, now=event.starts_at + offset, opens_at=opens(event)) == state


def test_join_is_never_revealed_to_the_waiting_list_cancelled_or_offline(make_event, register):
    full = make_event(capacity=1)
    register(full)
    waiting = register(full)
    assert join_state(waiting, now=full.starts_at, opens_at=opens(full)) == "waitlisted"
    cancelled = register(make_event())
    cancel_registration(cancelled)
    assert join_state(cancelled, now=cancelled.event.starts_at, opens_at=opens(cancelled.event)) == "cancelled"
    onsite = register(make_event(mode="onsite", join_url=""))
    assert join_state(onsite, now=onsite.event.starts_at, opens_at=opens(onsite.event)) == "offline"


def test_join_link_redirects_only_in_the_window_and_records_the_first_use(client, make_event, register, now):
    soon = make_event(starts_at=now + timedelta(minutes=10))
    later = make_event(starts_at=now + timedelta(days=2))
    registration, early = register(soon), register(later)
    response = client.get(f"/r/{registration.token}/join")
    assert response.status_code == 303 and response.headers["Location"] == SECRET
    assert response.headers["Referrer-Policy"] == "no-referrer"
    db.session.rollback()
    first = db.session.get(Registration, registration.id).first_joined_at
    assert first is not None
    client.get(f"/r/{registration.token}/join")
    db.session.rollback()
    assert db.session.get(Registration, registration.id).first_joined_at == first
    page = client.get(f"/r/{early.token}/join")
    assert page.status_code == 200 and "werkt vanaf" in page.get_data(as_text=True)
    assert SECRET not in page.get_data(as_text=True)


def test_organiser_can_change_the_join_url_and_every_link_follows(client, make_event, register, now):
    from eventsvc.events.management import update_event

    event = make_event(starts_at=now + timedelta(minutes=5))
    registration = register(event)
    update_event(event, join_url="https://meet.example.org/new-room")
    assert client.get(f"/r/{registration.token}/join").headers["Location"] == "https://meet.example.org/new-room"


def test_secret_join_url_never_leaks(client, smtp, make_event, register, now):
    event = make_event(capacity=1, starts_at=now + timedelta(minutes=5))
    register(event)
    waiting = register(event, email="waiting@example.org")
    deliver()
    for path in ("/", f"/e/{event.slug}", f"/e/{event.slug}/agenda.ics", "/feed.ics",
                 f"/r/{waiting.token}", f"/r/{waiting.token}/join", f"/r/{waiting.token}/agenda.ics"):
        body = client.get(path).get_data(as_text=True)
        assert SECRET not in body, path
    for mail in by_recipient(smtp)["waiting@example.org"]:
        assert SECRET not in mail.as_string()
    for received in smtp.messages:  # nor in any mail: the personal join page stands in for it
        assert SECRET not in received.data.decode("utf-8", "replace")


def due(message_filter=None):
    """Let time pass: make every pending reminder due now."""
    db.session.execute(update(Message).where(Message.kind.in_(("reminder", "day_before")), Message.status == "pending")
                       .values(send_after=datetime.now(timezone.utc)))
    db.session.commit()


def reminders():
    db.session.rollback()
    return db.session.scalars(select(Message).where(Message.kind == "reminder").order_by(Message.id)).all()


def test_reminder_is_queued_at_start_minus_lead_and_sent_once(smtp, make_event, register, now):
    event = make_event(reminder_lead_minutes=30)
    registration = register(event)
    [reminder] = reminders()
    assert reminder.send_after == event.starts_at - timedelta(minutes=30)
    deliver()
    assert [r.message["Subject"] for r in smtp.messages] == [f"Bevestiging: {event.title}"]
    due()
    deliver()
    deliver()
    subjects = [r.message["Subject"] for r in smtp.messages]
    assert subjects.count(f"Uw link voor {event.title}") == 1
    text = smtp.messages[-1].message.get_body(("plain",)).get_content()
    assert f"/r/{registration.token}/join" in text


def test_reschedule_moves_reminders_and_an_old_one_is_never_sent(smtp, make_event, register, now):
    event = make_event(day_before_reminder=True)
    register(event)
    old = reminders()[0]
    new_start = event.starts_at + timedelta(days=7)
    reschedule_event(event, starts_at=new_start, ends_at=new_start + timedelta(hours=1), reason="OCW")
    rows = reminders()
    assert [r.status for r in rows] == ["superseded", "pending"]
    assert rows[1].send_after == new_start - timedelta(minutes=60)
    # A reminder that somehow still carries the old time is not sent.
    db.session.execute(update(Message).where(Message.id == old.id).values(status="pending"))
    db.session.commit()
    due()
    deliver()
    db.session.rollback()
    assert db.session.get(Message, old.id).status == "superseded"
    assert sum(r.message["Subject"].startswith("Uw link") for r in smtp.messages) == 1
    day_before = db.session.scalars(select(Message).where(Message.kind == "day_before")).all()
    assert sorted(m.status for m in day_before) == ["sent", "superseded"]


def test_a_session_moved_back_to_its_first_time_queues_its_reminders_again(make_event, register):
    event = make_event(day_before_reminder=True)
    register(event)
    first = (event.starts_at, event.ends_at)
    later = event.starts_at + timedelta(days=7)
    reschedule_event(event, starts_at=later, ends_at=later + timedelta(hours=1), reason="OCW-webinar")
    reschedule_event(event, starts_at=first[0], ends_at=first[1], reason="Toch de oude datum")
    pending = db.session.scalars(select(Message).where(Message.status == "pending",
                                                       Message.kind.in_(("reminder", "day_before")))).all()
    assert sorted((m.kind, m.payload["starts_at"]) for m in pending) == [
        ("day_before", first[0].isoformat()), ("reminder", first[0].isoformat())]


def test_a_notice_superseded_while_a_worker_sends_it_keeps_its_key(make_event, register):
    """It may still go out: its key must then keep the same reminder from being queued again."""
    event = make_event()
    register(event)
    [sending] = reminders()
    key = sending.dedupe_key
    db.session.execute(update(Message).where(Message.id == sending.id).values(
        locked_until=datetime.now(timezone.utc) + timedelta(minutes=5), locked_by="worker-1"))
    db.session.commit()
    later = event.starts_at + timedelta(days=7)
    reschedule_event(event, starts_at=later, ends_at=later + timedelta(hours=1), reason="OCW-webinar")
    old, new = reminders()
    assert (old.id, old.status, old.dedupe_key) == (sending.id, "superseded", key)
    assert new.status == "pending" and new.dedupe_key != key
    # The worker, back from its batch, finds it superseded: it was not sent, so its key goes.
    result = BatchResult()
    _prepare([sending.id], "worker-1", result)
    [old, _new] = reminders()
    assert (old.status, old.dedupe_key) == ("superseded", f"{key}:superseded:{old.id}") and result.skipped == 1


def test_cancellation_supersedes_reminders_and_promotion_queues_them(make_event, register):
    event = make_event(capacity=1)
    first = register(event)
    second = register(event)
    assert [r.registration_id for r in reminders()] == [first.id]
    cancel_registration(first)
    assert [(r.registration_id, r.status) for r in reminders()] == [(first.id, "superseded"), (second.id, "pending")]
    cancel_event(event, reason="ziek")
    assert {r.status for r in reminders()} == {"superseded"}


def test_late_registrant_gets_the_join_link_in_the_confirmation(smtp, make_event, register, now):
    event = make_event(starts_at=now + timedelta(minutes=30))  # the 60-minute reminder is past
    registration = register(event)
    assert reminders() == []
    deliver()
    text = smtp.wait_for(1)[0].message.get_body(("plain",)).get_content()
    assert f"/r/{registration.token}/join" in text


def test_calendar_links_on_the_event_and_confirmation_pages(client, make_event):
    event = make_event(starts_at=datetime(2031, 6, 23, 10, 45, tzinfo=timezone.utc),
                       ends_at=datetime(2031, 6, 23, 12, 0, tzinfo=timezone.utc))
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert f"/e/{event.slug}/agenda.ics" in page
    google = next(part for part in page.split('"') if part.startswith("https://calendar.google.com"))
    query = parse_qs(urlsplit(google.replace("&amp;", "&")).query)
    assert query["dates"] == ["20310623T104500Z/20310623T120000Z"]
    assert "https://outlook.live.com/calendar/0/action/compose?" in page
    calendar = icalendar.Calendar.from_ical(client.get(f"/e/{event.slug}/agenda.ics").data)
    entry = vevent(calendar)
    assert str(calendar["METHOD"]) == "PUBLISH" and str(entry["UID"]) == event.uid
    assert "ORGANIZER" not in entry and "ATTENDEE" not in entry and "/join" not in calendar.to_ical().decode()


def test_public_feed_lists_upcoming_events_and_cancelled_ones(client, make_event, register, now):
    published = make_event(title="Gepubliceerd")
    cancelled = make_event(title="Afgelast")
    make_event(title="Concept", status="draft")
    register(published, name="Zoë Geheim", email="zoe.geheim@example.org")
    cancel_event(cancelled, reason="ziek")
    response = client.get("/feed.ics")
    body = response.get_data(as_text=True)
    calendar = icalendar.Calendar.from_ical(response.data)
    vcal = read_with_vobject(response.data)
    entries = {str(e["SUMMARY"]): e for e in calendar.walk("VEVENT")}
    assert sorted(entries) == ["Afgelast", "Gepubliceerd"]
    assert str(entries["Afgelast"]["STATUS"]) == "CANCELLED" and int(entries["Afgelast"]["SEQUENCE"]) == 1
    assert str(calendar["METHOD"]) == "PUBLISH" and len(vcal.vevent_list) == 2
    for secret in ("Zoë", "zoe.geheim", "ORGANIZER", "ATTENDEE", SECRET, "/r/"):
        assert secret not in body


def test_private_feed_shows_the_registrants_sessions_at_their_current_times(client, make_event, register):
    first, second = make_event(), make_event()
    registration = register(first, email="zoe@example.org")
    register(second, email="ZOE@example.org")
    register(second, email="someone.else@example.org")
    new_start = first.starts_at + timedelta(days=3)
    reschedule_event(first, starts_at=new_start, ends_at=new_start + timedelta(hours=1), reason="OCW")
    page = client.get(f"/r/{registration.token}").get_data(as_text=True)
    assert f"webcal://eventsvc.test/r/{registration.token}/feed.ics" in page
    calendar = icalendar.Calendar.from_ical(client.get(f"/r/{registration.token}/feed.ics").data)
    starts = sorted(e["DTSTART"].dt.astimezone(timezone.utc) for e in calendar.walk("VEVENT"))
    assert starts == sorted([new_start, second.starts_at])
    assert client.get("/r/not-a-token/feed.ics").status_code == 404
