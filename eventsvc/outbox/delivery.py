"""Claiming due outbox rows and delivering them over SMTP (invariant 3).

A row is claimed with a lease (`locked_until`); on PostgreSQL the claim query
skips rows other workers hold (FOR UPDATE SKIP LOCKED). A row is marked sent
only after the SMTP server accepted it. Accepted rows are marked in groups of
MARK_SENT_EVERY (one commit per message cost a fifth of a fan-out), so a
worker killed mid-batch re-sends at most that many, and never more than its
batch, once its lease runs out. Each re-sent mail keeps its Message-ID.
"""
import logging
import random
import smtplib
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from ..extensions import db, mail
from ..observability import count_delivery_failure, observe_delivery
from ..transaction import unit_of_work
from ..types import utcnow
from .mail import render
from .models import Message, superseded_key

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=6)
MARK_SENT_EVERY = 20


class ServerUnavailable(Exception):
    """The SMTP server could not be reached or dropped us: not the message's fault."""


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    server_down: bool = False
    errors: list[str] = field(default_factory=list)

    def add(self, other: "BatchResult") -> None:
        for name in ("claimed", "sent", "retried", "failed", "skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def claim_due(worker_id: str, *, limit: int, now: datetime | None = None) -> list[int]:
    """Lease up to `limit` due rows to this worker and return their ids."""
    now = now or utcnow()
    lease = timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])

    def claim():
        free = or_(Message.locked_until.is_(None), Message.locked_until < now)
        ids = db.session.scalars(
            select(Message.id)
            .where(Message.status == "pending", Message.send_after <= now, free)
            .order_by(Message.send_after, Message.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if ids:
            db.session.execute(
                update(Message).where(Message.id.in_(ids), free)
                .values(locked_until=now + lease, locked_by=worker_id)
                .execution_options(synchronize_session=False))
        return list(ids)

    return unit_of_work(claim)


def release(ids: list[int], worker_id: str) -> None:
    """Give leased rows back untouched (the server is down; no attempt is spent)."""
    if ids:
        unit_of_work(lambda: db.session.execute(
            update(Message).where(Message.id.in_(ids), Message.locked_by == worker_id,
                                  Message.status == "pending")
            .values(locked_until=None, locked_by=None)))


def deliver_batch(ids: list[int], worker_id: str, *, should_stop=lambda: False) -> BatchResult:
    """Post the claimed webhooks, then send the claimed mails over one SMTP connection."""
    result = BatchResult(claimed=len(ids))
    kinds = dict(db.session.execute(select(Message.id, Message.kind).where(Message.id.in_(ids))).all())
    db.session.rollback()
    hooks = [i for i in ids if kinds.get(i) == "webhook"]
    mails = [i for i in ids if kinds.get(i) != "webhook"]
    if hooks:
        from ..webhooks.delivery import deliver_webhook

        for message_id in hooks:
            if should_stop():
                release([message_id], worker_id)
                continue
            deliver_webhook(message_id, worker_id, result)
    if mails:
        _deliver_mails(mails, worker_id, result, should_stop)
    return result


@dataclass
class Prepared:
    """A claimed mail, rendered and ready to hand to the SMTP server."""

    id: int
    attempts: int
    due_since: datetime
    email: object


def _deliver_mails(ids, worker_id, result, should_stop):
    remaining, accepted = _keep_leased(_prepare(ids, worker_id, result), worker_id, result), []
    try:
        if remaining:
            with mail.connect() as connection:
                while remaining and not should_stop():
                    if _send_one(connection.host, remaining[0], result):
                        accepted.append(remaining[0])
                    remaining.pop(0)
                    if len(accepted) >= MARK_SENT_EVERY:
                        _mark_sent(accepted, result)
                        remaining = _keep_leased(remaining, worker_id, result)
    except (ServerUnavailable, smtplib.SMTPException, OSError) as error:
        result.server_down = True
        count_delivery_failure("server_unavailable")
        result.errors.append(f"{type(error).__name__}: {error}")
        log.warning("SMTP server unavailable: %s", error)
    finally:
        _mark_sent(accepted, result)
        release([p.id for p in remaining], worker_id)


def _keep_leased(items: list["Prepared"], worker_id: str, result: BatchResult) -> list["Prepared"]:
    """Renew the lease on the rows still to send, and keep only those this worker
    still holds. A slow server can outlast a lease; another worker may then have
    claimed the rest, and sending them here too would duplicate every one."""
    if not items:
        return items
    lease_until = utcnow() + timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])
    held = set(unit_of_work(lambda: db.session.scalars(
        update(Message).where(Message.id.in_([p.id for p in items]), Message.locked_by == worker_id,
                              Message.status == "pending")
        .values(locked_until=lease_until).returning(Message.id)
        .execution_options(synchronize_session=False)).all()))
    result.skipped += len(items) - len(held)
    return [p for p in items if p.id in held]


def _mark_sent(accepted: list["Prepared"], result: BatchResult) -> None:
    """Record that the server accepted these, in one statement; empties the list."""
    if not accepted:
        return
    now = utcnow()
    unit_of_work(lambda: db.session.execute(
        update(Message).where(Message.id.in_([p.id for p in accepted]))
        .values(status="sent", sent_at=now, attempts=Message.attempts + 1, last_error=None,
                locked_until=None, locked_by=None)
        .execution_options(synchronize_session=False)))
    result.sent += len(accepted)
    for item in accepted:
        observe_delivery((now - item.due_since).total_seconds())
    accepted.clear()


def _prepare(ids, worker_id, result) -> list[Prepared]:
    """Load the batch with what its mails need in a few queries, render each, and
    end the read transaction: none stays open while talking SMTP."""
    from ..events.models import Event
    from ..registrations.models import Registration

    messages = db.session.scalars(
        select(Message).where(Message.id.in_(ids)).order_by(Message.send_after, Message.id)
        .options(selectinload(Message.registration).selectinload(Registration.event)
                 .selectinload(Event.changes))
        .execution_options(populate_existing=True)).all()
    prepared, superseded, broken = [], [], []
    for message in messages:
        if message.status == "superseded" and message.locked_by == worker_id:
            superseded.append(message.id)  # superseded while we held it: unsent, so it gives up its key
            continue
        if message.status != "pending" or message.locked_by != worker_id:
            result.skipped += 1
            continue
        attempts = message.attempts + 1
        try:
            email_message = render(message) if is_still_due(message) else None
        except Exception as error:  # a bug in rendering must not stop the queue
            log.exception("rendering message %s failed", message.id)
            broken.append((message.id, attempts, f"render: {type(error).__name__}: {error}"))
            continue
        if email_message is None:
            superseded.append(message.id)
        else:
            prepared.append(Prepared(message.id, attempts, max(message.created_at, message.send_after), email_message))
    db.session.rollback()
    if superseded:
        unit_of_work(lambda: db.session.execute(
            update(Message).where(Message.id.in_(superseded))
            .values(status="superseded", locked_until=None, locked_by=None, dedupe_key=superseded_key())
            .execution_options(synchronize_session=False)))
        result.skipped += len(superseded)
    for message_id, attempts, error in broken:
        record_failure(message_id, attempts, error, permanent=False, result=result, reason="render")
    return prepared


def _send_one(smtp: smtplib.SMTP, item: Prepared, result: BatchResult) -> bool:
    """Hand one mail to the server; True when it accepted it."""
    try:
        smtp.send_message(item.email)
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        record_failure(item.id, item.attempts, f"{code} {_decode(text)}", permanent=code >= 500, result=result)
        _reset(smtp)
        return False
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
        record_failure(item.id, item.attempts, f"{error.smtp_code} {_decode(error.smtp_error)}",
                       permanent=error.smtp_code >= 500, result=result)
        _reset(smtp)
        return False
    except (smtplib.SMTPServerDisconnected, socket.timeout, OSError) as error:
        # Lost the server with this message in hand: it costs this message one attempt
        # (so a message that kills the connection cannot loop forever), then the queue backs off.
        record_failure(item.id, item.attempts, f"connection: {error}", permanent=False, result=result,
                       reason="connection")
        raise ServerUnavailable(str(error)) from error
    return True


def is_still_due(message) -> bool:
    """A reminder is sent only for the schedule it was queued for."""
    scheduled_for = message.payload.get("starts_at")
    if scheduled_for is None:
        return True
    event = message.registration.event
    return scheduled_for == event.starts_at.isoformat() and not event.is_cancelled


def update_message(message_id: int, **values) -> None:
    unit_of_work(lambda: db.session.execute(
        update(Message).where(Message.id == message_id).values(**values)
        .execution_options(synchronize_session=False)))


def record_failure(message_id: int, attempts: int, error: str, *, permanent: bool, result: BatchResult,
                   reason: str = "retry") -> None:
    values = dict(attempts=attempts, last_error=error[:2000], locked_until=None, locked_by=None)
    if permanent or attempts >= current_app.config["OUTBOX_MAX_ATTEMPTS"]:
        values["status"] = "failed"
        result.failed += 1
        count_delivery_failure("permanent" if permanent else "exhausted")
    else:
        values["send_after"] = utcnow() + retry_delay(attempts)
        result.retried += 1
        count_delivery_failure(reason)
    db.session.rollback()
    update_message(message_id, **values)


def retry_delay(attempts: int) -> timedelta:
    """Exponential back-off with jitter: base · 2^(n−1) · [0.5, 1.5), at most six hours."""
    base = current_app.config["OUTBOX_RETRY_BASE_SECONDS"]
    delay = timedelta(seconds=base * 2 ** (attempts - 1) * random.uniform(0.5, 1.5))
    return min(delay, MAX_BACKOFF)


def _reset(smtp: smtplib.SMTP) -> None:
    try:
        smtp.rset()
    except smtplib.SMTPException:
        raise ServerUnavailable("RSET failed")


def _decode(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
