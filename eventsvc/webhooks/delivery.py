"""Posting one webhook notice: signed, bounded in time, retried like mail."""
import time

import httpx

from ..extensions import db
from ..outbox.delivery import BatchResult, record_failure, update_message
from ..outbox.models import Message
from ..types import utcnow
from .models import Webhook
from .services import SIGNATURE_HEADER, encode_body, sign

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def deliver_webhook(message_id: int, worker_id: str, result: BatchResult) -> None:
    message = db.session.get(Message, message_id, populate_existing=True)
    if message is None or message.status != "pending" or message.locked_by != worker_id:
        result.skipped += 1
        db.session.rollback()
        return
    hook = db.session.get(Webhook, message.payload.get("webhook_id"))
    attempts = message.attempts + 1
    if hook is None or not hook.is_active:
        db.session.rollback()
        update_message(message_id, status="superseded", locked_until=None, locked_by=None)
        result.skipped += 1
        return
    body = encode_body(message.payload["body"])
    headers = {"Content-Type": "application/json", "User-Agent": "eventsvc-webhooks",
               "X-Eventsvc-Event": message.payload["type"], "X-Eventsvc-Delivery": message.message_id,
               SIGNATURE_HEADER: sign(hook.secret, int(time.time()), body)}
    url = hook.url
    db.session.rollback()  # no transaction open while waiting on the receiver
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as error:
        record_failure(message_id, attempts, f"{type(error).__name__}: {error}", permanent=False, result=result)
        return
    if 200 <= response.status_code < 300:
        update_message(message_id, status="sent", sent_at=utcnow(), attempts=attempts, last_error=None,
                       locked_until=None, locked_by=None)
        result.sent += 1
    else:
        record_failure(message_id, attempts, f"HTTP {response.status_code}", permanent=False, result=result)
