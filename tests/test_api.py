"""The JSON API: public and organiser endpoints, problem documents, webhooks."""
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from eventsvc.auth.services import create_organiser
from eventsvc.auth.tokens import create_api_token, revoke_api_token
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration
from eventsvc.webhooks.services import verify

from .mailtools import deliver

PROBLEM = "application/problem+json"


@pytest.fixture
def organiser(app):
    return create_organiser("mieke@example.org", "Mieke", "correct horse battery")[0]


@pytest.fixture
def token(organiser):
    return create_api_token(organiser, "CRM")[1]


@pytest.fixture
def auth(token):
    return {"Authorization": f"Bearer {token}"}


def count(model, *where):
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def registration_body(**overrides):
    body = {"name": "Zoë de Vries", "email": "zoe@example.org", "organisation": "Stichting", "role": "Bestuurder",
            "consent": True}
    body.update(overrides)
    return body


def test_list_and_get_public_events_with_filters(client, make_event, now):
    make_event(title="Voor besturen", audience="Schoolbestuurders", starts_at=now + timedelta(days=3))
    make_event(title="Voor leraren", audience="Leraren", starts_at=now + timedelta(days=30))
    make_event(title="Concept", status="draft")
    listed = client.get("/api/v1/events").json
    assert [e["title"] for e in listed] == ["Voor besturen", "Voor leraren"]
    assert "join_url" not in listed[0] and listed[0]["url"].startswith("http://eventsvc.test/e/")
    assert [e["title"] for e in client.get("/api/v1/events?audience=leraren").json] == ["Voor leraren"]
    control = client.get("/api/v1/events?audience=%00")  # PostgreSQL would refuse the NUL: a 500
    assert control.status_code == 422 and control.mimetype == PROBLEM
    until = (now + timedelta(days=10)).isoformat()
    assert [e["title"] for e in client.get("/api/v1/events", query_string={"to": until}).json] == ["Voor besturen"]
    one = client.get(f"/api/v1/events/{listed[0]['slug']}")
    assert one.status_code == 200 and one.json["places_left"] is None
    missing = client.get("/api/v1/events/bestaat-niet")
    assert missing.status_code == 404 and missing.mimetype == PROBLEM and missing.json["status"] == 404
    bad = client.get("/api/v1/events?from=gisteren")
    assert bad.status_code == 422 and "from" in bad.json["errors"]


def test_public_registration_follows_the_form_rules(client, make_event, register):
    event = make_event(capacity=1)
    first = client.post(f"/api/v1/events/{event.slug}/registrations", json=registration_body())
    assert first.status_code == 201 and first.json["status"] == "confirmed"
    waiting = client.post(f"/api/v1/events/{event.slug}/registrations",
                          json=registration_body(email="other@example.org"))
    assert waiting.json["status"] == "waitlisted"
    repeat = client.post(f"/api/v1/events/{event.slug}/registrations", json=registration_body(email=" ZOE@example.org"))
    fresh = client.post(f"/api/v1/events/{event.slug}/registrations", json=registration_body(email="new@example.org"))
    assert repeat.status_code == fresh.status_code == 201 and repeat.json == fresh.json  # reveals nothing
    assert count(Registration) == 3
    assert first.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("body, field", [
    (registration_body(email="geen-adres"), "email"),
    (registration_body(name="Zoë\r\nBcc: x@example.org"), "name"),
    (registration_body(name=""), "name"),
    (registration_body(name="x" * 201), "name"),
    (registration_body(consent=False), "consent"),
    ({k: v for k, v in registration_body().items() if k != "consent"}, "consent"),
    (registration_body(locale="fr"), "locale"),
    (registration_body(extra="x"), "extra"),
])
def test_bad_registration_is_a_422_problem_and_writes_nothing(client, make_event, body, field):
    event = make_event()
    response = client.post(f"/api/v1/events/{event.slug}/registrations", json=body)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert field in response.json["errors"] and "Traceback" not in response.get_data(as_text=True)
    assert count(Registration) == 0 and count(Message) == 0


def test_closed_registration_is_a_409_with_the_reason(client, make_event, now):
    event = make_event(starts_at=now - timedelta(minutes=1))
    response = client.post(f"/api/v1/events/{event.slug}/registrations", json=registration_body())
    assert response.status_code == 409 and "al begonnen" in response.json["title"]


def test_organiser_endpoints_need_a_valid_token(client, make_event, organiser, token):
    event = make_event()
    for headers in ({}, {"Authorization": "Bearer evs_forged"}, {"Authorization": f"Basic {token}"}):
        response = client.post(f"/api/v1/events/{event.slug}/cancel", json={"reason": "x"}, headers=headers)
        assert response.status_code == 401 and response.mimetype == PROBLEM
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Access-Control-Allow-Origin" not in response.headers
    row = db.session.scalar(select(__import__("eventsvc.auth.models", fromlist=["ApiToken"]).ApiToken))
    assert row.token_hash != token and token not in row.token_hash  # only a hash is stored
    revoke_api_token(row)
    revoked = client.get(f"/api/v1/events/{event.slug}/registrations", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401
    assert count(Event, Event.status == "cancelled") == 0


def test_create_update_publish_reschedule_and_cancel(client, auth, smtp):
    body = {"title": "Samen onderwijs versnellen", "mode": "online", "starts_at": "2031-06-15T12:45:00+02:00",
            "ends_at": "2031-06-15T14:00:00+02:00", "capacity": 2, "contact_email": "mieke@example.org"}
    created = client.post("/api/v1/events", json=body, headers=auth)
    assert created.status_code == 201 and created.json["status"] == "draft"
    slug = created.json["slug"]
    unpublishable = client.post(f"/api/v1/events/{slug}/publish", headers=auth)
    assert unpublishable.status_code == 422 and "join_url" in unpublishable.json["errors"]
    patched = client.patch(f"/api/v1/events/{slug}", json={"join_url": "https://meet.example.org/x"}, headers=auth)
    assert patched.status_code == 200
    assert client.patch(f"/api/v1/events/{slug}", json={"starts_at": "2031-06-16T12:45:00+02:00",
                                                       "ends_at": "2031-06-16T14:00:00+02:00"},
                        headers=auth).status_code == 409
    assert client.post(f"/api/v1/events/{slug}/publish", headers=auth).json["status"] == "published"
    client.post(f"/api/v1/events/{slug}/registrations", json=registration_body())
    moved = client.post(f"/api/v1/events/{slug}/reschedule", headers=auth, json={
        "starts_at": "2031-06-23T12:45:00+02:00", "ends_at": "2031-06-23T14:00:00+02:00",
        "reason": "het webinar van het ministerie van OCW"})
    assert moved.status_code == 200 and moved.json == {"queued": 1}
    same = client.post(f"/api/v1/events/{slug}/reschedule", headers=auth, json={
        "starts_at": "2031-06-23T12:45:00+02:00", "ends_at": "2031-06-23T14:00:00+02:00", "reason": "x"})
    assert same.status_code == 422 and same.mimetype == PROBLEM
    backwards = client.post(f"/api/v1/events/{slug}/reschedule", headers=auth, json={
        "starts_at": "2031-06-23T14:00:00+02:00", "ends_at": "2031-06-23T12:00:00+02:00", "reason": "x"})
    assert backwards.status_code == 422 and "ends_at" in backwards.json["errors"]
    assert client.post(f"/api/v1/events/{slug}/cancel", json={"reason": "ziek"}, headers=auth).json == {"queued": 1}
    again = client.post(f"/api/v1/events/{slug}/cancel", json={"reason": "ziek"}, headers=auth)
    assert again.status_code == 409 and again.json["title"] == "Deze bijeenkomst is al geannuleerd."
    deliver()
    kinds = {(m["kind"], m["status"]): m["count"] for m in client.get(f"/api/v1/events/{slug}/deliveries",
                                                                      headers=auth).json}
    assert kinds[("cancelled", "sent")] == 1


@pytest.mark.parametrize("body, field", [
    ({"title": "", "starts_at": "2031-06-15T12:45:00+02:00", "ends_at": "2031-06-15T14:00:00+02:00"}, "title"),
    ({"title": "x", "starts_at": "2031-06-15T12:45:00", "ends_at": "2031-06-15T14:00:00+02:00"}, "starts_at"),
    ({"title": "x", "starts_at": "2031-06-15T12:45:00+02:00", "ends_at": "2031-06-15T14:00:00+02:00",
      "timezone": "Mars/Olympus"}, "timezone"),
    ({"title": "x", "starts_at": "2031-06-15T12:45:00+02:00", "ends_at": "2031-06-15T14:00:00+02:00",
      "capacity": -5}, "capacity"),
    ({"title": "x", "starts_at": "2031-06-15T12:45:00+02:00", "ends_at": "2031-06-15T14:00:00+02:00",
      "join_url": "javascript:alert(1)"}, "join_url"),
])
def test_bad_event_input_is_refused(client, auth, body, field):
    response = client.post("/api/v1/events", json=body, headers=auth)
    assert response.status_code == 422 and field in response.json["errors"]
    assert count(Event) == 0


def test_registrations_paging_filters_and_cancel(client, auth, make_event, register):
    event = make_event(capacity=2)
    people = [register(event, name=f"Persoon {i}") for i in range(5)]
    page = client.get(f"/api/v1/events/{event.slug}/registrations?page=2&page_size=2", headers=auth).json
    assert (page["total"], page["page"], [r["id"] for r in page["items"]]) == (5, 2, [people[2].id, people[3].id])
    waiting = client.get(f"/api/v1/events/{event.slug}/registrations?status=waitlisted", headers=auth).json
    assert waiting["total"] == 3
    search = f"/api/v1/events/{event.slug}/registrations?q="
    assert client.get(search + "persoon 3", headers=auth).json["total"] == 1
    assert [client.get(search + q, headers=auth).json["total"] for q in ("_", "%25", "persoon_3")] == [0, 0, 0]
    cancelled = client.post(f"/api/v1/events/{event.slug}/registrations/{people[0].id}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    db.session.rollback()
    assert db.session.get(Registration, people[2].id).status == "confirmed"
    other = make_event()
    assert client.post(f"/api/v1/events/{other.slug}/registrations/{people[1].id}/cancel",
                       headers=auth).status_code == 404


def test_token_cli_creates_a_working_token(app, client, organiser, make_event):
    result = app.test_cli_runner().invoke(args=["token", "create", "mieke@example.org", "--name", "CRM"])
    token = result.output.strip()
    assert result.exit_code == 0 and token.startswith("evs_")
    event = make_event()
    assert client.get(f"/api/v1/events/{event.slug}/registrations",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200


class Receiver:
    """A local HTTP server that records webhook deliveries, and can fail the first ones."""

    def __init__(self, fail_first=0):
        self.received, self.fail_first = [], fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                failing = receiver.fail_first > 0
                receiver.fail_first -= 1
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_are_signed_delivered_through_the_outbox_and_retried(app, client, auth, smtp, make_event):
    # The retry is made due by hand below; with the tests' 1 s back-off, a slow worker pass could
    # reach it on its own and deliver it twice.
    app.config["OUTBOX_RETRY_BASE_SECONDS"] = 600
    receiver = Receiver(fail_first=1)
    try:
        created = client.post("/api/v1/webhooks", json={"url": receiver.url, "secret": "s" * 32}, headers=auth)
        assert created.status_code == 201 and created.json["secret"] == "s" * 32
        assert "secret" not in client.get("/api/v1/webhooks", headers=auth).json[0]
        event = make_event()
        client.post(f"/api/v1/events/{event.slug}/registrations", json=registration_body())
        deliver()
        assert len(receiver.received) == 1  # the receiver failed once
        hook_id = created.json["id"]
        [delivery] = client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=auth).json
        assert delivery["status"] == "pending" and delivery["last_error"] == "HTTP 500"
        db.session.execute(Message.__table__.update().where(Message.kind == "webhook")
                           .values(send_after=datetime.now(timezone.utc)))
        db.session.commit()
        deliver()
        headers, body = receiver.received[-1]
        assert verify("s" * 32, headers["X-Eventsvc-Signature"], body, now=int(time.time()))
        assert not verify("wrong secret 1234", headers["X-Eventsvc-Signature"], body, now=int(time.time()))
        assert not verify("s" * 32, headers["X-Eventsvc-Signature"], body + b" ", now=int(time.time()))
        payload = json.loads(body)
        assert payload["type"] == "registration.created" and payload["data"]["email"] == "zoe@example.org"
        assert headers["X-Eventsvc-Event"] == "registration.created"
        [delivery] = client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=auth).json
        assert delivery["status"] == "sent" and delivery["attempts"] == 2
        client.post(f"/api/v1/events/{event.slug}/reschedule", headers=auth, json={
            "starts_at": "2031-06-23T12:45:00+02:00", "ends_at": "2031-06-23T14:00:00+02:00", "reason": "OCW"})
        client.post(f"/api/v1/events/{event.slug}/cancel", headers=auth, json={"reason": "ziek"})
        deliver()
        types = [json.loads(b)["type"] for _, b in receiver.received[1:]]
        assert types == ["registration.created", "event.rescheduled", "event.cancelled"]
        assert client.delete(f"/api/v1/webhooks/{hook_id}", headers=auth).status_code == 204
        assert client.get("/api/v1/webhooks", headers=auth).json == []
    finally:
        receiver.close()


def test_openapi_document_and_docs_page(client):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/api/v1/events/{slug}/reschedule" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    page = client.get("/api/v1/docs").get_data(as_text=True)
    assert "POST /api/v1/events/{slug}/reschedule" in page
