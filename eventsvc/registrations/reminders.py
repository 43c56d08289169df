"""Reminders that follow the schedule: the join link at starts_at − lead, and
optionally a day-before reminder. Each carries the start it was queued for;
the worker sends it only while that is still the start (delivery.is_still_due).
"""
from datetime import datetime, timedelta

from flask import current_app

from ..outbox.services import enqueue_for_registrants, notice


def _moments(event, now: datetime):
    """(kind, send_after) for the reminders still ahead of us."""
    lead = event.reminder_lead(current_app.config["REMINDER_LEAD_MINUTES"])
    moments = []
    if event.is_online and event.starts_at - lead > now:
        moments.append(("reminder", event.starts_at - lead))
    if event.day_before_reminder and event.starts_at - timedelta(days=1) > now:
        moments.append(("day_before", event.starts_at - timedelta(days=1)))
    return moments


def reminders_for(registration, event, *, now: datetime) -> list[dict]:
    """The reminders for one newly confirmed registrant of `event` (mapped, or its snapshot), to
    queue with their other notices. Someone who registers after the reminder's time gets no
    reminder: the confirmation already carries the join link."""
    return [notice(kind, registration=registration, send_after=send_after,
                   payload={"starts_at": event.starts_at.isoformat()},
                   dedupe_key=f"{kind}:{registration.id}:{event.starts_at:%Y%m%dT%H%M%S}")
            for kind, send_after in _moments(event, now)]


def queue_reminders_for_event(event, *, now: datetime) -> int:
    """After a reschedule: the reminders for the new start, for every confirmed registrant."""
    queued = 0
    for kind, send_after in _moments(event, now):
        queued += enqueue_for_registrants(event, kind, {"starts_at": event.starts_at.isoformat()}, now,
                                          statuses=("confirmed",), state=f"{event.starts_at:%Y%m%dT%H%M%S}",
                                          send_after=send_after)
    return queued
