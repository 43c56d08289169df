"""Flask's signed-cookie sessions and Flask-WTF's CSRF tokens, signed with less work.

Every new visitor of a public page gets both: a CSRF token for the forms and the
session cookie that holds its secret half. Flask and Flask-WTF build a new
serializer (its signer, its derived key) for every cookie and every token, and
try to zlib-compress a payload of a few dozen bytes that never gets shorter.
Here one serializer per secret key is built and kept, it keeps one signer with
its key derived once and signs in one call of hmac.digest(), and it skips the
compression. A session of plain values (a new visitor's holds only the CSRF
token's secret half) is written as JSON in one call, without Flask's walk for
tagged types, which gives the same text for such values. What it writes reads
back with the stock serializers (and the other way round): the same signatures,
the same encoding, only never the compressed form. The cookie itself is set as
Flask sets it. `Form` is a FlaskForm that makes its token only when it is
rendered, not for every post that builds it, and `CSRFProtect` is Flask-WTF's,
checking the same requests with fewer lookups.
"""
import hashlib
import hmac
import json
import os
from threading import Lock

from flask import current_app, g, request, session
from flask.json.provider import DefaultJSONProvider
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSessionInterface
from flask_wtf import CSRFProtect as _CSRFProtect
from flask_wtf import FlaskForm
from itsdangerous import Serializer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.signer import HMACAlgorithm
from wtforms.csrf.core import CSRFTokenField
from wtforms.fields import HiddenField


class _KeptKeySigner(TimestampSigner):
    """A TimestampSigner that derives its signing key once and signs in one call."""

    def derive_key(self, secret_key=None):
        if secret_key is not None:  # unsigning tries each key (fallbacks too): as usual
            return super().derive_key(secret_key)
        key = self.__dict__.get("_derived_key")
        if key is None:
            key = self._derived_key = super().derive_key()
        return key

    def get_signature(self, value) -> bytes:
        # HMACAlgorithm builds an HMAC object for every signature; hmac.digest() gives the same bytes
        # for a hash known by its name (sha1, sha256, …), which the first signature checks.
        digest = self.__dict__.get("_digest_name")
        if digest is None:
            digest = self._digest_name = self._hash_name(value)
        if not digest:
            return super().get_signature(value)
        return base64_encode(hmac.digest(self.derive_key(), want_bytes(value), digest))

    def _hash_name(self, value) -> str:
        """The name hmac.digest() knows this signer's hash by, or "" when it must sign as usual."""
        if type(self.algorithm) is not HMACAlgorithm:
            return ""
        name = self.algorithm.digest_method().name
        try:
            same = hmac.digest(self.derive_key(), want_bytes(value), name) == \
                self.algorithm.get_signature(self.derive_key(), want_bytes(value))
        except ValueError:  # a hash that hmac.digest() does not know by that name
            return ""
        return name if same else ""


class KeptSerializer(URLSafeTimedSerializer):
    """URLSafeTimedSerializer that signs with one kept signer and never compresses."""

    default_signer = _KeptKeySigner

    def dump_payload(self, obj) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))  # URLSafeSerializerMixin's, minus zlib

    def make_signer(self, salt=None):
        if salt is not None and salt != self.salt:
            return super().make_signer(salt)
        signer = self.__dict__.get("_signer")
        if signer is None:
            signer = self._signer = super().make_signer()
        return signer


class _KeptPerKey:
    """One serializer per set of keys, built on first use (a rotated key builds a new one)."""

    def __init__(self, build):
        self._build, self._kept, self._lock = build, {}, Lock()

    def __call__(self, *key):
        serializer = self._kept.get(key)
        if serializer is None:
            with self._lock:
                self._kept.clear()  # the old key's serializer is never needed again
                serializer = self._kept[key] = self._build(*key)
        return serializer


_PLAIN = (str, int, float, bool, type(None))


class _SessionJSON(TaggedJSONSerializer):
    """Flask's session serializer. A session of plain values (strings, numbers, booleans, None)
    needs none of its tags: written with one kept encoder set as the app's JSON provider
    writes, which is the same text Flask's tagging walk and a new encoder per call give."""

    _encoders: dict = {}

    def dumps(self, value) -> str:
        provider = current_app.json if current_app else None  # outside an app, Flask's own way
        if type(provider) is not DefaultJSONProvider or type(value) is not dict \
                or (len(value) == 1 and next(iter(value)) in self.tags) \
                or not all(type(item) in _PLAIN for item in value.values()):
            return super().dumps(value)
        options = (provider.sort_keys, provider.ensure_ascii)
        encode = self._encoders.get(options)
        if encode is None:
            encode = self._encoders.setdefault(options, json.JSONEncoder(
                separators=(",", ":"), sort_keys=options[0], ensure_ascii=options[1]).encode)
        return encode(value)


class SessionInterface(SecureCookieSessionInterface):
    """Exactly Flask's cookie sessions, with a kept KeptSerializer."""

    serializer = _SessionJSON()

    def __init__(self):
        self._serializers = _KeptPerKey(lambda secret_key, fallbacks: KeptSerializer(
            [*fallbacks, secret_key], salt=self.salt, serializer=self.serializer,  # current key last
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": self.digest_method}))

    def get_signing_serializer(self, app):
        if not app.secret_key:
            return None
        return self._serializers(app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))

    def open_session(self, app, request):
        # Most requests of new visitors carry no cookie at all: nothing to parse.
        if "HTTP_COOKIE" not in request.environ and self.get_signing_serializer(app) is not None:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response) -> None:
        """Flask's (3.1), line for line, but for `Vary: Cookie`: response.vary.add() parses the
        header into a set and writes it back, at each of its two calls, for every visitor."""
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        cookie = dict(domain=domain, path=path, secure=self.get_cookie_secure(app),
                      partitioned=self.get_cookie_partitioned(app), samesite=self.get_cookie_samesite(app),
                      httponly=self.get_cookie_httponly(app))
        if session.accessed:
            _vary_on_cookie(response)
        if not session:  # an emptied session's cookie is removed; an empty one is never set
            if session.modified:
                response.delete_cookie(name, **cookie)
                _vary_on_cookie(response)
            return
        if not self.should_set_cookie(app, session):
            return
        expires = self.get_expiration_time(app, session)
        response.set_cookie(name, self.get_signing_serializer(app).dumps(dict(session)), expires=expires, **cookie)
        _vary_on_cookie(response)


def _vary_on_cookie(response) -> None:
    """response.vary.add("Cookie"): the same header, written only when Cookie is not in it yet."""
    vary = response.headers.get("Vary")
    if not vary:
        response.headers["Vary"] = "Cookie"
    elif "cookie" not in (value.strip().lower() for value in vary.split(",")):
        response.headers["Vary"] = f"{vary}, Cookie"


_csrf_serializers = _KeptPerKey(lambda secret_key: KeptSerializer(secret_key, salt="wtf-csrf-token"))


def csrf_token() -> str:
    """flask_wtf.csrf.generate_csrf(), with a kept serializer: this request's signed token,
    its secret half in the session. Flask-WTF reads the token it finds on `g` (its forms
    render it, its validate_csrf checks it), exactly as if it had made it."""
    app, request_globals = current_app._get_current_object(), g._get_current_object()  # one lookup each
    field_name = app.config.get("WTF_CSRF_FIELD_NAME") or "csrf_token"
    token = request_globals.get(field_name)
    if token is None:
        secret_key = app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key
        if not secret_key:
            raise RuntimeError("A secret key is required to use CSRF.")
        this_session = session._get_current_object()
        raw = this_session.get(field_name)
        if not isinstance(raw, str):
            raw = this_session[field_name] = hashlib.sha1(os.urandom(64)).hexdigest()
        token = _csrf_serializers(secret_key).dumps(raw)
        setattr(request_globals, field_name, token)
    return token


class _TokenWhenRendered(CSRFTokenField):
    """A form's CSRF field that makes its token when the form is rendered, with csrf_token().

    Flask-WTF's field signs a new token whenever a form is built, also for a post that is
    valid and answered with a redirect, where no one ever sees it. Validation is the same:
    CSRFProtect checks every post before the view runs, and the form's own check defers to it."""

    def process(self, *args, **kwargs):
        HiddenField.process(self, *args, **kwargs)  # the posted value; no token made yet

    def _value(self):
        return csrf_token()


class _CSRFWhenRendered(FlaskForm.Meta.csrf_class):
    field_class = _TokenWhenRendered


class Form(FlaskForm):
    """FlaskForm whose CSRF token is made only when the form is rendered."""

    class Meta:
        csrf_class = _CSRFWhenRendered


class CSRFProtect(_CSRFProtect):
    """Flask-WTF's CSRFProtect, asking for the method first. Flask-WTF (1.3) looks up whether
    the view is exempt before it looks at the method, for every GET too; a request whose
    method it never checks is let through either way."""

    def protect(self, apply_exemptions=False):
        if request.method not in current_app.config["WTF_CSRF_METHODS"]:
            return
        super().protect(apply_exemptions)
