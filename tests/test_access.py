"""Access (issue 8, item 3): who may reach which route, tokens, redirects, CSRF, CORS.

The route walk makes a decision for every endpoint in `app.url_map`: organiser
pages refuse anonymous users, personal pages need their token, the JSON API's
organiser half needs a bearer token, and everything else is in an explicit
list of public endpoints. A new route that fits none of these fails the test
until someone decides who may use it.

These run through the Flask test client on SQLite and PostgreSQL; they start
no processes and take about a second, so they are not marked slow.
"""
import base64
import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select

from eventsvc.auth.services import create_organiser
from eventsvc.events.models import Event
from eventsvc.extensions import db
from eventsvc.outbox.models import Message
from eventsvc.registrations.models import Registration, new_token

from .conftest import csrf_token

PASSWORD = "correct horse battery staple"
ORGANISER = "organiser@example.org"

# Who may use these without logging in or holding a token, and why.
PUBLIC_ENDPOINTS = {
    "static": "style sheet and icon",
    "events.upcoming": "the list of upcoming events",
    "events.show": "the event page and its registration form",
    "events.register": "posting the registration form (CSRF-protected, throttled)",
    "events.registered": "the confirmation page; shows only what this session just did",
    "events.calendar": "the public .ics of one event (no join URL, no personal data)",
    "events.feed": "the public iCal feed",
    "events.privacy": "the privacy statement",
    "auth.login": "the organiser login form (throttled, locks after failures)",
    "auth.logout": "logging out needs nothing",
    "i18n.switch": "the language switch (session only)",
    "health.healthz": "liveness probe",
    "health.readyz": "readiness probe: counts and ages only; nginx keeps it internal (docs/deploy.md)",
    "metrics": "Prometheus metrics: counts only; nginx keeps it internal (docs/deploy.md)",
    "api_docs": "the API documentation page",
    "api-docs.openapi_json": "the OpenAPI document",
    "api_public.list_events": "public events as JSON",
    "api_public.get_event": "one public event as JSON",
    "api_public.create_registration": "registering through the API (JSON only, throttled)",
}
ORGANISER_PREFIXES = ("admin.",)  # the web workspace: login required
BEARER_PREFIXES = ("api_organiser.",)  # the JSON API for organisers: a bearer token required
PERSONAL_PREFIXES = ("registrations.",)  # the registrant's pages: the token in the URL
SKIPPED_METHODS = {"OPTIONS"}  # answered by Flask itself, no view runs


@pytest.fixture
def organiser(app):
    return create_organiser(ORGANISER, "Mieke van den Berg", PASSWORD)[0]


def log_in(client):
    response = client.post("/inloggen", data={"email": ORGANISER, "password": PASSWORD,
                                              "csrf_token": csrf_token(client, "/inloggen")})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return client


@pytest.fixture
def world(app, make_event, register, organiser):
    """One event with a confirmed and a waitlisted registrant; the values every rule is built with."""
    event = make_event(capacity=1)
    first, second = register(event), register(event)
    return {"event": event, "registration": first, "waitlisted": second, "values": {
        "event_id": event.id, "registration_id": first.id, "slug": event.slug, "token": first.token,
        "filename": "style.css", "token_id": 1, "webhook_id": 1}}


def rules(app, prefixes=None):
    for rule in app.url_map.iter_rules():
        if prefixes is None or rule.endpoint.startswith(prefixes):
            yield rule


def url_for_rule(rule, values):
    missing = set(rule.arguments) - set(values)
    assert not missing, f"{rule.endpoint}: add a value for {missing} to the `world` fixture"
    return rule.build({name: values[name] for name in rule.arguments}, append_unknown=False)[1]


def fetch(client, url, method="GET", **kwargs):
    """One request, its body read and the response closed (static files hold an open file)."""
    response = client.open(url, method=method, **kwargs)
    response.get_data()
    response.close()
    return response


def methods(rule):
    return sorted(rule.methods - SKIPPED_METHODS)


def snapshot():
    """What a refused request must leave untouched."""
    db.session.rollback()
    return (
        db.session.execute(select(Event.id, Event.status, Event.starts_at, Event.sequence, Event.confirmed_count,
                                  Event.title).order_by(Event.id)).all(),
        db.session.execute(select(Registration.id, Registration.status).order_by(Registration.id)).all(),
        db.session.scalar(select(func.count()).select_from(Message)),
    )


# --- every route has an owner ------------------------------------------------------------------------

def test_every_route_is_organiser_only_personal_bearer_only_or_explicitly_public(app):
    undecided = [
        f"{rule.endpoint} {sorted(rule.methods - {'HEAD', 'OPTIONS'})} {rule.rule}"
        for rule in rules(app)
        if not rule.endpoint.startswith(ORGANISER_PREFIXES + BEARER_PREFIXES + PERSONAL_PREFIXES)
        and rule.endpoint not in PUBLIC_ENDPOINTS
    ]
    assert not undecided, ("routes without an access decision; add them to PUBLIC_ENDPOINTS (with the reason) "
                           f"or protect them: {undecided}")


def test_every_organiser_route_and_method_sends_anonymous_users_to_the_login(app, client, world):
    # A valid CSRF token and plausible form data: only the login guard may refuse.
    token = csrf_token(client, f"/e/{world['event'].slug}")
    data = {"csrf_token": token, "reason": "x", "title": "Overgenomen", "subject": "s", "body": "b",
            "lang": "en", "name": "x", "url": "https://evil.example/hook", "message_id": "1"}
    before, checked = snapshot(), 0
    for rule in rules(app, ORGANISER_PREFIXES):
        url = url_for_rule(rule, world["values"])
        for method in methods(rule):
            response = fetch(client, url, method, data=data)
            assert response.status_code == 302, (method, url, response.status_code)
            assert urlsplit(response.headers["Location"]).path == "/inloggen", (method, url)
            assert b"Alliantie" not in response.data and b"person" not in response.data
            checked += 1
    assert checked >= 25
    assert snapshot() == before


def test_organiser_api_refuses_without_a_valid_bearer_token_even_with_a_logged_in_session(app, client, world):
    log_in(client)  # a browser session cookie must not authenticate the (CSRF-exempt) API
    before, checked = snapshot(), 0
    wrong = [{}, {"Authorization": "Bearer evs_" + secrets.token_urlsafe(32)}, {"Authorization": "Bearer "},
             {"Authorization": "Basic " + base64.b64encode(f"{ORGANISER}:{PASSWORD}".encode()).decode()}]
    for rule in rules(app, BEARER_PREFIXES):
        url = url_for_rule(rule, world["values"])
        for method in methods(rule):
            for headers in wrong:
                response = fetch(client, url, method, headers=headers,
                                 json={"reason": "x", "title": "Overgenomen", "url": "https://evil.example"})
                assert response.status_code == 401, (method, url, headers, response.status_code)
                assert "Bearer" in response.headers.get("WWW-Authenticate", "")
                checked += 1
    assert checked == 0 or checked >= 4
    assert snapshot() == before


def test_every_personal_page_is_not_found_without_its_exact_token(app, client, world):
    real = world["registration"].token
    near_miss = real[:-1] + ("A" if real[-1] != "A" else "B")
    # A valid CSRF token, so a POST reaches the view and the token check.
    form_token = csrf_token(client, f"/e/{world['event'].slug}")
    before, checked = snapshot(), 0
    for rule in rules(app, PERSONAL_PREFIXES):
        assert "token" in rule.arguments, f"{rule.rule}: a personal page without a token in its URL"
        for wrong in (new_token(), near_miss, real.upper() if real.upper() != real else real.lower(), real + "x"):
            assert len(wrong) >= len(real)
            url = url_for_rule(rule, dict(world["values"], token=wrong))
            for method in methods(rule):
                response = fetch(client, url, method, data={"csrf_token": form_token})
                assert response.status_code == 404, (method, url, response.status_code)
                assert world["registration"].name.encode() not in response.data
                checked += 1
        # ... and the right token does open it (so the 404s above mean something).
        if "GET" in rule.methods:
            response = fetch(client, url_for_rule(rule, world["values"]))
            assert response.status_code in (200, 403), (rule.rule, response.status_code)
    assert checked >= 24
    assert snapshot() == before


def test_cors_is_closed_except_on_the_public_api(app, client, world):
    """No page or organiser endpoint lets another site read its answers; the public API may,
    but never with credentials (cookies)."""
    origin = {"Origin": "https://evil.example"}
    public_api_urls = {rule.rule for rule in rules(app) if rule.endpoint.startswith("api_public.")}
    before = snapshot()
    for rule in rules(app):
        url = url_for_rule(rule, world["values"])
        for method in methods(rule):
            response = fetch(client, url, method, headers=origin)
            assert response.headers.get("Access-Control-Allow-Credentials") != "true", (method, url)
            if not rule.endpoint.startswith("api_public."):
                assert "Access-Control-Allow-Origin" not in response.headers, (method, url)
        if rule.rule not in public_api_urls:
            preflight = fetch(client, url, "OPTIONS",
                              headers=dict(origin, **{"Access-Control-Request-Method": "POST"}))
            assert "Access-Control-Allow-Origin" not in preflight.headers, url
    assert snapshot() == before


# --- tokens ------------------------------------------------------------------------------------------

def test_registration_tokens_have_at_least_128_bits_from_secrets_and_are_unique(app, make_event, register,
                                                                                monkeypatch):
    calls = []
    real_token_urlsafe = secrets.token_urlsafe

    def spy(nbytes=None):
        calls.append(nbytes)
        return real_token_urlsafe(nbytes)

    monkeypatch.setattr(secrets, "token_urlsafe", spy)
    event = make_event()
    tokens = [register(event).token for _ in range(60)]
    assert len(calls) >= 60 and all(n is not None and n >= 16 for n in calls), calls[:3]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128
        assert len(token) >= len(secrets.token_urlsafe(32))  # 43 characters, 256 bits
    db.session.rollback()
    stored = db.session.scalars(select(Registration.token)).all()
    assert sorted(stored) == sorted(tokens)


# --- redirects ---------------------------------------------------------------------------------------

HOSTILE_TARGETS = ["https://evil.example/", "//evil.example/", "/\\evil.example/", "\\\\evil.example",
                   "/\t/evil.example/", "/\n/evil.example", " //evil.example", "http:evil.example",
                   "https:/evil.example", "javascript:alert(1)", "/%2F%2Fevil.example", "//%65vil.example"]


def _stays_on_site(location: str) -> bool:
    cleaned = re.sub(r"[\t\n\r]", "", location).strip()  # what a browser does with it
    parts = urlsplit(cleaned.replace("\\", "/"))
    return cleaned.startswith("/") and not parts.scheme and not parts.netloc and not cleaned.startswith("//")


def test_join_link_redirects_only_to_the_events_stored_url(app, client, make_event, register, now):
    event = make_event(starts_at=now + timedelta(minutes=5))  # inside the join window
    registration = register(event)
    for name in ("next", "url", "redirect", "join_url", "to", "target", "return"):
        for target in ("https://evil.example/", "//evil.example/"):
            response = client.get(f"/r/{registration.token}/join", query_string={name: target})
            assert response.status_code == 303
            assert response.headers["Location"] == event.join_url
    response = client.get(f"/r/{new_token()}/join", query_string={"next": "https://evil.example/"})
    assert response.status_code == 404 and "Location" not in response.headers


def test_login_never_redirects_off_site(app, organiser):
    from eventsvc.auth.views import _safe_next

    with app.test_request_context("/inloggen"):
        for target in HOSTILE_TARGETS:
            assert _stays_on_site(_safe_next(target)), (target, _safe_next(target))
    # And through the form (each login costs a password hash, so a few of them). One client:
    # the test keeps one app context open, and Flask-WTF caches the CSRF token in `g`.
    client = app.test_client()
    token = csrf_token(client, "/inloggen")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "/\t/evil.example/"):
        response = client.post("/inloggen", query_string={"next": target},
                               data={"email": ORGANISER, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 303
        assert _stays_on_site(response.headers["Location"]), (target, response.headers["Location"])


def test_language_switch_never_redirects_off_site(app, client):
    token = csrf_token(client, "/inloggen")
    for target in HOSTILE_TARGETS:
        for response in (client.get("/taal", query_string={"lang": "en", "next": target}),
                         client.post("/taal", data={"lang": "en", "next": target, "csrf_token": token})):
            assert response.status_code == 303
            assert _stays_on_site(response.headers["Location"]), (target, response.headers["Location"])


# --- CSRF --------------------------------------------------------------------------------------------

def _post_routes(app):
    for rule in rules(app):
        if "POST" in rule.methods and not rule.endpoint.startswith(("api_public.", "api_organiser.")):
            yield rule


def test_every_state_changing_form_refuses_a_post_without_a_valid_csrf_token(app, client, world):
    """Logged in as an organiser with a personal token at hand: the CSRF check alone must refuse."""
    log_in(client)
    # A well-formed token signed with the app's key, but for another session. (Not taken from a
    # second test client: the test keeps one app context open, and Flask-WTF caches the token in `g`.)
    foreign = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(secrets.token_hex(20))
    data = {"reason": "x", "title": "Overgenomen", "subject": "s", "body": "b", "lang": "en", "name": "Eve",
            "email": "eve@example.org", "consent": "y", "password": PASSWORD, "message_id": "1",
            "action": "send", "url": "https://evil.example/hook"}
    before, checked = snapshot(), 0
    for rule in _post_routes(app):
        url = url_for_rule(rule, world["values"])
        for token in (None, "", foreign, "not-a-token"):
            form = dict(data) if token is None else dict(data, csrf_token=token)
            response = client.post(url, data=form)
            assert response.status_code == 400, (url, token, response.status_code)
            checked += 1
    assert checked >= 4 * 20
    assert snapshot() == before
    assert client.get("/beheer/").status_code == 200  # still logged in: nothing was undone either


def test_public_registration_api_accepts_json_only(app, client, world):
    """The API is CSRF-exempt; a cross-site HTML form can send form data or text/plain, never JSON."""
    event = world["event"]
    url = f"/api/v1/events/{event.slug}/registrations"
    if not any(rule.rule == url.replace(event.slug, "<slug>") for rule in rules(app)):
        pytest.skip("no public registration API")
    before = snapshot()
    body = '{"name": "Eve", "email": "eve@example.org", "consent": true}'
    for kwargs in ({"data": body, "content_type": "text/plain"},
                   {"data": {"name": "Eve", "email": "eve@example.org", "consent": "true"}},
                   {"data": body, "content_type": "application/x-www-form-urlencoded"}):
        response = client.post(url, **kwargs)
        assert 400 <= response.status_code < 500, (kwargs, response.status_code)
    assert snapshot() == before


def test_a_language_link_from_another_site_never_makes_a_login_outlive_the_browser(app, client, organiser):
    """The switch is a plain link, so another site can make a browser follow it: it may change
    the language, never turn a login that ends with the browser into one that lasts a month."""
    log_in(client)
    response = client.get("/taal", query_string={"lang": "en", "next": "/beheer/"})
    assert response.status_code == 303 and response.headers["Location"] == "/beheer/"
    assert "Expires=" not in response.headers["Set-Cookie"]
    assert '<html lang="en">' in client.get("/beheer/").get_data(as_text=True)
