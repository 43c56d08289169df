"""Session cookies and CSRF tokens are signed by kept serializers (eventsvc/sessions.py) that
must stay interchangeable with Flask's and Flask-WTF's own: what one writes, the other reads."""
import hashlib
import os
import threading
from contextlib import contextmanager

import pytest
from flask import g, request as flask_request, session
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms import ValidationError

from eventsvc.extensions import db
from eventsvc.sessions import csrf_token

from .test_page_cache import ServerLikeClient, token_on
from .test_registration import post_form, registrations


@pytest.fixture(autouse=True)
def server_like_clients(app):
    app.test_client_class = ServerLikeClient


@contextmanager
def a_request(app):
    """A request of its own. (The app fixture keeps one app context pushed, and the requests
    would share its `g`, where the request's token is kept.)"""
    with app.test_request_context("/"):
        g.pop("csrf_token", None)
        yield


def stock_serializer(app):
    return SecureCookieSessionInterface().get_signing_serializer(app)


@pytest.mark.parametrize("data", [{"csrf_token": "0f" * 20}, {"lang": "en", "csrf_token": "ab", "n": 3, "x": None},
                                  {"naam": "Zoë", "ok": True, "f": 1.5}, {" t": "looks like a tag"},
                                  {"registered": {"slug": "a"}}, {"pair": (1, 2)}])
def test_a_session_is_written_as_the_same_json_text_as_flask_writes_it(app, data):
    from flask.json.tag import TaggedJSONSerializer

    with app.test_request_context("/"):
        assert app.session_interface.serializer.dumps(data) == TaggedJSONSerializer().dumps(data)
        assert app.session_interface.serializer.loads(app.session_interface.serializer.dumps(data)) == data
    elsewhere = []  # another thread: no app context there
    thread = threading.Thread(target=lambda: elsewhere.append(
        (app.session_interface.serializer.dumps(data), TaggedJSONSerializer().dumps(data))))
    thread.start(), thread.join(10)
    assert len(elsewhere) == 1 and elsewhere[0][0] == elsewhere[0][1]


def test_the_session_cookie_reads_back_with_flasks_own_serializer_and_the_other_way_round(app):
    ours = app.session_interface.get_signing_serializer(app)
    data = {"csrf_token": hashlib.sha1(b"x").hexdigest(), "lang": "en", "registered": {"slug": "a", "n": (1, 2)}}
    assert stock_serializer(app).loads(ours.dumps(data)) == data
    # Flask compresses a payload that shrinks ("." in front); ours reads that too.
    long = {"text": "herhaling " * 200}
    stock = stock_serializer(app).dumps(long)
    assert stock.startswith(".") and ours.loads(stock) == long
    assert not ours.dumps(long).startswith(".")  # never compressed: a session is a few dozen bytes


def test_a_rotated_key_still_reads_the_cookies_signed_with_the_old_one(app):
    old = app.session_interface.get_signing_serializer(app).dumps({"lang": "en"})
    app.config["SECRET_KEY_FALLBACKS"] = [app.secret_key]
    app.secret_key = app.config["SECRET_KEY"] = "a-new-secret-key-for-this-test"
    ours = app.session_interface.get_signing_serializer(app)
    assert ours.loads(old) == {"lang": "en"}
    new = ours.dumps({"lang": "nl"})
    assert stock_serializer(app).loads(new) == {"lang": "nl"}
    assert new.rsplit(".", 1)[1] != old.rsplit(".", 1)[1]  # signed with the new key


def test_our_csrf_token_is_flask_wtfs_token(app):
    with a_request(app):
        token = csrf_token()
        assert generate_csrf() == token == csrf_token()  # one token per request, wherever it is asked for
        validate_csrf(token)  # Flask-WTF accepts it against the session's secret half
        assert len(session["csrf_token"]) == 40
    with a_request(app):
        with pytest.raises(ValidationError):
            validate_csrf(token)  # another session: refused


def test_flask_wtfs_token_is_ours(app):
    with a_request(app):
        token = generate_csrf()
        assert csrf_token() == token
    raw = hashlib.sha1(b"a visitor").hexdigest()
    with a_request(app):
        session["csrf_token"] = raw
        theirs = generate_csrf()
    with a_request(app):
        session["csrf_token"] = raw
        assert csrf_token().split(".")[0] == theirs.split(".")[0]  # the same payload; the timestamp may differ
        validate_csrf(theirs)


def test_a_visitor_registers_with_the_token_the_page_gave_them(app, make_event):
    event = make_event()
    visitor = app.test_client()
    token = token_on(visitor.get(f"/e/{event.slug}").get_data(as_text=True))
    cookie = visitor.get_cookie("session").value
    assert not cookie.startswith(".")
    assert stock_serializer(app).loads(cookie)["csrf_token"]
    assert post_form(visitor, event, csrf_token=token, email="een@example.org").status_code == 303
    assert post_form(app.test_client(), event, csrf_token=token, email="twee@example.org").status_code == 400
    db.session.rollback()  # end this test's read snapshot: the requests wrote in sessions of their own
    assert [r.email for r in registrations()] == ["een@example.org"]


def test_a_form_sent_back_with_an_error_carries_a_token_that_the_next_post_may_use(app, make_event):
    # The form's CSRF field makes its token when the form is rendered (sessions.Form), not
    # when a post builds it: the page that shows the error must still carry a valid one.
    event = make_event()
    visitor = app.test_client()
    first = token_on(visitor.get(f"/e/{event.slug}").get_data(as_text=True))
    refused = post_form(visitor, event, csrf_token=first, email="geen-adres")
    assert refused.status_code == 422
    again = token_on(refused.get_data(as_text=True))
    assert again
    with a_request(app):
        session["csrf_token"] = stock_serializer(app).loads(visitor.get_cookie("session").value)["csrf_token"]
        validate_csrf(again)  # Flask-WTF's own check accepts it for this visitor's session
    assert post_form(visitor, event, csrf_token=again, email="een@example.org").status_code == 303
    db.session.rollback()
    assert [r.email for r in registrations()] == ["een@example.org"]


def test_a_valid_post_signs_no_token_it_never_shows(app, make_event, monkeypatch):
    event = make_event()
    visitor = app.test_client()
    token = token_on(visitor.get(f"/e/{event.slug}").get_data(as_text=True))
    signed = []
    for maker in ("eventsvc.sessions.csrf_token", "flask_wtf.csrf.generate_csrf"):  # ours, Flask-WTF's
        monkeypatch.setattr(maker, lambda *args, **kwargs: signed.append(1) or "x")
    assert post_form(visitor, event, csrf_token=token, email="een@example.org").status_code == 303
    assert signed == []


def test_the_csrf_check_asks_for_the_method_before_the_exemptions(app, make_event, monkeypatch):
    from eventsvc.extensions import csrf

    event = make_event()
    visitor = app.test_client()
    assert visitor.get(f"/e/{event.slug}").status_code == 200
    asked = []
    monkeypatch.setattr(type(csrf), "_is_exempt", lambda self: asked.append(flask_request.method) or False)
    assert visitor.get(f"/e/{event.slug}").status_code == 200
    assert visitor.head("/inloggen").status_code == 200
    assert asked == []  # a safe method: nothing to look up
    # Every unsafe method is still checked: without a token, refused before the view runs.
    assert visitor.post("/inloggen", data={"email": "a@example.org", "password": "x"}).status_code == 400
    assert visitor.post("/taal", data={"lang": "en"}).status_code == 400
    assert asked == ["POST", "POST"]


def test_an_exempt_blueprint_still_takes_posts_without_a_token(app, make_event):
    event = make_event()
    response = app.test_client().post(f"/api/v1/events/{event.slug}/registrations", json={
        "name": "Zoë de Vries", "email": "zoe@example.org", "consent": True})
    assert response.status_code == 201, response.get_data(as_text=True)


@pytest.mark.parametrize("change", ["new token", "emptied", "read only", "untouched"])
def test_our_session_cookie_and_vary_header_are_flasks(app, change):
    """SessionInterface.save_session is Flask's, apart from how it adds `Vary: Cookie`: the same
    Set-Cookie (a value Flask reads) and the same Vary, after the app's own Vary: Accept-Language."""
    raw = hashlib.sha1(os.urandom(8)).hexdigest()

    def saved(interface):
        with app.test_request_context("/", headers={"Cookie": "session=" + stock_serializer(app).dumps({"lang": "en"})}):
            session = interface.open_session(app, flask_request)
            if change == "new token":
                session["csrf_token"] = raw
            elif change == "emptied":
                session.clear()
            elif change == "read only":
                session.accessed = True  # as reading it through flask.session marks it
            response = app.response_class("page", headers={"Vary": "Accept-Language"})
            interface.save_session(app, session, response)
            return response.headers

    ours, flasks = saved(app.session_interface), saved(SecureCookieSessionInterface())
    assert ours.get("Vary") == flasks.get("Vary")
    assert ours.get("Vary") == {"new token": "Accept-Language, Cookie", "emptied": "Accept-Language, Cookie",
                                "read only": "Accept-Language, Cookie", "untouched": "Accept-Language"}[change]
    our_cookie, flasks_cookie = ours.getlist("Set-Cookie"), flasks.getlist("Set-Cookie")
    assert len(our_cookie) == len(flasks_cookie) == (1 if change in ("new token", "emptied") else 0)
    if our_cookie:
        value, attributes = our_cookie[0].split(";", 1)
        assert attributes == flasks_cookie[0].split(";", 1)[1]
        if change == "new token":
            assert stock_serializer(app).loads(value.split("=", 1)[1]) == {"lang": "en", "csrf_token": raw}
