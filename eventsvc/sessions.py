"""Flask's signed-cookie sessions, with the signing serializer built once per key."""
from threading import Lock

from flask.sessions import SecureCookieSessionInterface


class SessionInterface(SecureCookieSessionInterface):
    """Exactly Flask's cookie sessions. Flask builds a new serializer (and its signer and
    key derivation) twice per request, to read the cookie and to write it; here it is
    built once for each secret key (and its fallbacks) and shared, as it holds no state."""

    def __init__(self):
        self._serializers = {}
        self._lock = Lock()

    def get_signing_serializer(self, app):
        if not app.secret_key:
            return None
        key = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        serializer = self._serializers.get(key)
        if serializer is None:
            with self._lock:
                self._serializers.clear()  # a rotated key: the old serializer is never needed again
                serializer = self._serializers[key] = super().get_signing_serializer(app)
        return serializer
