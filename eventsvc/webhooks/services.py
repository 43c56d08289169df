"""Webhooks: notices to other systems, queued in the outbox like mail.

A notice is queued in the same transaction as the change it reports, with a
snapshot of the data at that moment, and delivered by the worker with an
HMAC-SHA256 signature over the timestamp and the body.
"""
import hashlib
import hmac
import json
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from ..errors import ServiceError
from ..extensions import db
from ..outbox.services import enqueue
from ..transaction import unit_of_work
from ..types import utcnow
from .models import EVENT_TYPES, Webhook

SIGNATURE_HEADER = "X-Eventsvc-Signature"


def create_webhook(*, url: str, secret: str | None = None, event_types=EVENT_TYPES, organiser=None) -> Webhook:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or len(url) > 2000:
        raise ServiceError(_l("Vul een webadres in dat begint met https://."), field="url")
    unknown = set(event_types) - set(EVENT_TYPES)
    if unknown or not event_types:
        raise ServiceError(_l("Onbekende soort gebeurtenis."), field="event_types")
    secret = secret or secrets.token_urlsafe(32)
    if len(secret) < 16 or len(secret) > 200:
        raise ServiceError(_l("Een geheim heeft 16 tot 200 tekens."), field="secret")

    def work():
        hook = Webhook(url=url, secret=secret, event_types=",".join(event_types),
                       organiser_id=getattr(organiser, "id", None))
        db.session.add(hook)
        return hook

    return unit_of_work(work)


def deactivate_webhook(hook: Webhook) -> None:
    unit_of_work(lambda: db.session.execute(update(Webhook).where(Webhook.id == hook.id).values(is_active=False)))


# Built once: every registration asks. Plain rows, not mapped webhooks: one query, no objects.
_ACTIVE_WEBHOOKS = select(Webhook.id, Webhook.event_types).where(Webhook.is_active.is_(True))


def emit(event_type: str, *, event, subject: str, data: dict, now: datetime | None = None, connection=None) -> int:
    """Queue `event_type` for every active webhook that wants it, in the caller's transaction:
    the session's, or that of a unit of work on `connection` (see outbox.services.enqueue_all)."""
    now = now or utcnow()
    queued = 0
    for hook_id, event_types in (connection or db.session).execute(_ACTIVE_WEBHOOKS):
        if event_type not in event_types.split(","):
            continue
        body = {"type": event_type, "created_at": now.isoformat(), "data": data}
        queued += enqueue("webhook", event=event, dedupe_key=f"webhook:{hook_id}:{event_type}:{subject}",
                          payload={"webhook_id": hook_id, "type": event_type, "body": body}, send_after=now,
                          connection=connection)
    return queued


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as receivers verify it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    expected = sign(secret, timestamp, body)
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(expected, header)


def encode_body(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def registration_data(registration) -> dict:
    return {"id": registration.id, "event": registration.event.slug, "status": registration.status,
            "name": registration.name, "email": registration.email, "organisation": registration.organisation,
            "role": registration.role, "locale": registration.locale,
            "registered_at": registration.registered_at.isoformat()}


def event_data(event) -> dict:
    change = event.latest_change
    return {"slug": event.slug, "title": event.title, "status": event.status, "sequence": event.sequence,
            "starts_at": event.starts_at.isoformat(), "ends_at": event.ends_at.isoformat(),
            "timezone": event.timezone, "reason": change.reason if change else None}
