"""Public pages are rendered once and served from the page cache, never shared where they are
personal: each visitor gets their own CSRF token. With PAGE_CACHE_RECHECK_SECONDS at 0 (as in the
rest of the suite) every change shows at once; with a window, an anonymous visitor sees it once the
window has passed, an organiser at once, and registering is never affected."""
import contextvars
import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from eventsvc.auth.services import create_organiser
from eventsvc.events.management import reschedule_event
from eventsvc.extensions import db
from eventsvc.page_cache import page_cache

from .test_registration import post_form, registrations

PASSWORD = "correct horse battery"


class ServerLikeClient(FlaskClient):
    """Each request in a context of its own, as under a real server. (The app fixture keeps
    one app context pushed, and requests would share its `g`, where the CSRF token and
    the logged-in user are kept for the request.)"""

    def open(self, *args, **kwargs):
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture(autouse=True)
def server_like_clients(app):
    app.test_client_class = ServerLikeClient


def token_on(page: str) -> str:
    return re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def served_from_cache(action):
    """How many requests `action` answered from the cache."""
    before = page_cache().hits
    action()
    return page_cache().hits - before


def test_each_visitor_gets_their_own_token_from_the_cached_page(app, make_event):
    event = make_event()
    first, second = app.test_client(), app.test_client()
    page_one = first.get(f"/e/{event.slug}").get_data(as_text=True)
    hits = served_from_cache(lambda: second.get(f"/e/{event.slug}"))
    page_two = second.get(f"/e/{event.slug}").get_data(as_text=True)
    assert hits == 1
    assert token_on(page_one) != token_on(page_two)
    assert "\x00" not in page_two
    # Both tokens work, each with its own session: neither visitor was given the other's form.
    assert post_form(first, event, csrf_token=token_on(page_one), email="een@example.org").status_code == 303
    assert post_form(second, event, csrf_token=token_on(page_two), email="twee@example.org").status_code == 303
    db.session.rollback()  # end this test's read snapshot: the requests wrote in sessions of their own
    assert [r.email for r in registrations()] == ["een@example.org", "twee@example.org"]


def test_a_token_from_another_session_is_still_refused(app, make_event):
    event = make_event()
    stranger = token_on(app.test_client().get(f"/e/{event.slug}").get_data(as_text=True))
    visitor = app.test_client()
    visitor.get(f"/e/{event.slug}")
    response = post_form(visitor, event, csrf_token=stranger)
    db.session.rollback()
    assert response.status_code == 400 and registrations() == []


def test_seats_left_count_down_with_every_registration_while_the_page_stays_cached(client, make_event,
                                                                                register):
    event = make_event(capacity=3)
    assert "Nog 3 plaatsen vrij" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    register(event)
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Nog 2 plaatsen vrij" in page and "Nog 3" not in page
    assert served_from_cache(lambda: client.get(f"/e/{event.slug}")) == 1
    register(event)
    assert "Nog 1 plaats vrij" in client.get(f"/e/{event.slug}").get_data(as_text=True)  # the singular
    register(event)
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Vol; u kunt zich aanmelden voor de wachtlijst" in page and "Aanmelden voor de wachtlijst" in page


def test_a_reschedule_shows_at_once(client, make_event, now):
    event = make_event(title="Samen onderwijs versnellen", starts_at=now + timedelta(days=10))
    assert "Verplaatst" not in client.get(f"/e/{event.slug}").get_data(as_text=True)
    reschedule_event(event, starts_at=event.starts_at + timedelta(days=8),
                     ends_at=event.ends_at + timedelta(days=8), reason="een webinar van het ministerie")
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Verplaatst" in page and "een webinar van het ministerie" in page


def test_closing_registration_shows_at_once(client, make_event, now):
    event = make_event()
    assert "<form method=\"post\" action=\"/e/" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    event.registration_closes_at = now - timedelta(minutes=1)
    db.session.commit()
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "De aanmelding voor deze bijeenkomst is gesloten." in page
    assert "<form method=\"post\" action=\"/e/" not in page


def test_a_change_between_the_check_and_the_render_is_shown_but_never_stored_as_the_old_version(
        client, make_event, monkeypatch):
    """The page is checked against a snapshot of the row and rendered from the event read
    after it. An edit in between must not leave the new page stored under the old version,
    where it would be served once the event is back as it was."""
    from eventsvc.events import services
    from sqlalchemy import update

    from eventsvc.events.models import Event

    event = make_event(title="Samen onderwijs versnellen")
    read_snapshot = services.get_public_event_snapshot

    def snapshot_then_edit(slug):
        snapshot = read_snapshot(slug)
        with db.engine.begin() as connection:
            connection.execute(update(Event).where(Event.id == snapshot.id).values(title="Tijdelijke titel"))
        return snapshot

    monkeypatch.setattr(services, "get_public_event_snapshot", snapshot_then_edit)
    assert "Tijdelijke titel" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    monkeypatch.setattr(services, "get_public_event_snapshot", read_snapshot)
    with db.engine.begin() as connection:
        connection.execute(update(Event).where(Event.id == event.id).values(title="Samen onderwijs versnellen"))
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Samen onderwijs versnellen" in page and "Tijdelijke titel" not in page


def test_languages_are_cached_apart(client, make_event):
    event = make_event()
    assert "Aanmelden" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    english = client.get(f"/e/{event.slug}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert 'lang="en"' in english and "Register" in english
    assert 'lang="nl"' in client.get(f"/e/{event.slug}").get_data(as_text=True)


def test_an_organiser_and_a_visitor_with_a_message_get_their_own_page(app, client, make_event):
    event = make_event()
    client.get(f"/e/{event.slug}")  # cached for anonymous visitors
    with client.session_transaction() as session:
        session["_flashes"] = [("success", "Uw taal is gewijzigd.")]
    assert served_from_cache(lambda: client.get(f"/e/{event.slug}")) == 0
    create_organiser("mieke@example.org", "Mieke van den Berg", PASSWORD)
    organiser = app.test_client()
    token = token_on(organiser.get("/inloggen").get_data(as_text=True))
    organiser.post("/inloggen", data={"email": "mieke@example.org", "password": PASSWORD, "csrf_token": token})
    hits = served_from_cache(lambda: organiser.get(f"/e/{event.slug}"))
    page = organiser.get(f"/e/{event.slug}").get_data(as_text=True)
    assert hits == 0 and "Inloggen voor organisatoren" not in page


def test_upcoming_list_and_feed_follow_the_data(client, make_event, register):
    event = make_event(title="Eerste", capacity=5)
    assert "Nog 5 plaatsen vrij" in client.get("/").get_data(as_text=True)
    assert served_from_cache(lambda: client.get("/")) == 1
    register(event)
    assert "Nog 4 plaatsen vrij" in client.get("/").get_data(as_text=True)
    make_event(title="Tweede")
    page = client.get("/").get_data(as_text=True)
    assert "Eerste" in page and "Tweede" in page
    assert "Tweede" in client.get("/feed.ics").get_data(as_text=True)


def test_the_cache_keeps_only_as_many_pages_as_configured(app, client, make_event):
    app.config["PAGE_CACHE_SIZE"] = 2
    page_cache().size = 2
    events = [make_event() for _ in range(3)]
    for event in events:
        client.get(f"/e/{event.slug}")
    assert len(page_cache()._pages) == 2
    assert served_from_cache(lambda: client.get(f"/e/{events[0].slug}")) == 0  # the oldest went first


def test_the_feed_answers_a_calendar_app_that_polls_with_304_until_something_changes(client, make_event,
                                                                                    register):
    event = make_event(title="Eerste")
    first = client.get("/feed.ics")
    assert first.status_code == 200 and first.headers["ETag"] and "Set-Cookie" not in first.headers
    again = client.get("/feed.ics", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    reschedule_event(event, starts_at=event.starts_at + timedelta(days=1),
                     ends_at=event.ends_at + timedelta(days=1), reason="ziekte")
    changed = client.get("/feed.ics", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and b"SEQUENCE:1" in changed.data


class Clock:
    """eventsvc.page_cache's monotonic clock, moved by the test."""

    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr("eventsvc.page_cache.monotonic", lambda: self.now)


def log_in_organiser(app):
    create_organiser("mieke@example.org", "Mieke van den Berg", PASSWORD)
    organiser = app.test_client()
    token = token_on(organiser.get("/inloggen").get_data(as_text=True))
    organiser.post("/inloggen", data={"email": "mieke@example.org", "password": PASSWORD, "csrf_token": token})
    return organiser


def test_within_the_recheck_window_visitors_get_the_page_as_it_was_read_and_then_the_change(
        app, client, make_event, monkeypatch, now):
    app.config["PAGE_CACHE_RECHECK_SECONDS"] = 1.0
    clock = Clock(monkeypatch)
    event = make_event(title="Samen onderwijs versnellen", starts_at=now + timedelta(days=10), capacity=5)
    organiser = log_in_organiser(app)
    assert "Nog 5 plaatsen vrij" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    reschedule_event(event, starts_at=event.starts_at + timedelta(days=8),
                     ends_at=event.ends_at + timedelta(days=8), reason="een webinar van het ministerie")
    clock.now += 0.9
    assert "Verplaatst" not in client.get(f"/e/{event.slug}").get_data(as_text=True)  # read 0.9 s ago
    assert "Verplaatst" in client.get("/").get_data(as_text=True)  # the list had not been read: read now
    assert "Verplaatst" in organiser.get(f"/e/{event.slug}").get_data(as_text=True)  # logged in: current
    clock.now += 0.2
    page = client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert "Verplaatst" in page and "een webinar van het ministerie" in page


def test_the_recheck_window_never_lets_a_registration_past_the_seats(app, client, make_event, monkeypatch):
    app.config["PAGE_CACHE_RECHECK_SECONDS"] = 60.0
    Clock(monkeypatch)
    event = make_event(capacity=1)
    assert "Nog 1 plaats vrij" in client.get(f"/e/{event.slug}").get_data(as_text=True)
    assert post_form(app.test_client(), event, email="een@example.org").status_code == 303
    late = app.test_client()
    assert "Nog 1 plaats vrij" in late.get(f"/e/{event.slug}").get_data(as_text=True)  # the page as read
    response = post_form(late, event, email="twee@example.org")
    assert response.status_code == 303
    assert "wachtlijst" in late.get(response.headers["Location"]).get_data(as_text=True)
    db.session.rollback()
    assert [(r.email, r.status) for r in registrations()] == [("een@example.org", "confirmed"),
                                                              ("twee@example.org", "waitlisted")]


def test_a_page_that_was_not_there_is_not_kept_missing(app, client, make_event, monkeypatch):
    app.config["PAGE_CACHE_RECHECK_SECONDS"] = 60.0
    Clock(monkeypatch)
    event = make_event(status="draft")
    assert client.get(f"/e/{event.slug}").status_code == 404
    event.status = "published"
    db.session.commit()
    assert client.get(f"/e/{event.slug}").status_code == 200  # published: shown at once
