"""One function per business event that concerns a registrant.

Each queues its notice in the outbox, inside the caller's transaction. The
dedupe key names the state the notice is about, so the same notice is never
queued twice for one state, however often the code path runs.
"""
from datetime import datetime

from ..outbox.services import delete_pending, enqueue, enqueue_all, notice, supersede_pending
from .reminders import reminders_for

# Kinds that describe a state of the registration that a later state replaces.
_STATE_KINDS = ("confirmation", "waitlisted", "promoted", "already_registered", "rescheduled",
                "reminder", "day_before")


def _incarnation(registration) -> str:
    # A registration that is cancelled and then revived is a new "incarnation".
    return registration.registered_at.strftime("%Y%m%dT%H%M%S%f")


def notify_confirmed(registration, event, *, now: datetime, connection=None) -> list[dict]:
    """Queue the confirmation and the reminders; returns them, for retract().
    `connection`: the unit of work's, when it runs without the session (outbox.services.enqueue_all)."""
    notices = [notice("confirmation", registration=registration,
                      dedupe_key=f"confirmation:{registration.id}:{_incarnation(registration)}"),
               *reminders_for(registration, event, now=now)]
    enqueue_all(notices, connection=connection)
    return notices


def retract(registration, notices: list[dict], *, connection=None) -> None:
    """Take back notices queued for `registration` earlier in this transaction.

    Only pending rows with these dedupe keys go: for a registration that was cancelled and
    is now revived, older rows with the same key were marked superseded on cancelling."""
    delete_pending(registration_id=registration.id, dedupe_keys=[n["dedupe_key"] for n in notices],
                   connection=connection)


def notify_waitlisted(registration, *, now: datetime, connection=None) -> None:
    enqueue("waitlisted", registration=registration, connection=connection,
            dedupe_key=f"waitlisted:{registration.id}:{_incarnation(registration)}")


def notify_promoted(registration, *, now: datetime) -> None:
    supersede_pending(event_id=registration.event_id, kinds=("waitlisted",), registration_id=registration.id)
    enqueue_all([notice("promoted", registration=registration,
                        dedupe_key=f"promoted:{registration.id}:{_incarnation(registration)}"),
                 *reminders_for(registration, registration.event, now=now)])


def notify_already_registered(registration, *, now: datetime) -> None:
    # At most one such reminder an hour, so the form cannot be used to flood a mailbox.
    enqueue("already_registered", registration=registration,
            dedupe_key=f"already_registered:{registration.id}:{now:%Y%m%d%H}")


def notify_registration_cancelled(registration, *, now: datetime) -> None:
    enqueue("registration_cancelled", registration=registration,
            dedupe_key=f"registration_cancelled:{registration.id}:{registration.cancelled_at:%Y%m%dT%H%M%S%f}")


def withdraw_pending(registration) -> None:
    """A cancelled registration gets nothing that was queued for its old state."""
    supersede_pending(event_id=registration.event_id, kinds=_STATE_KINDS, registration_id=registration.id)
