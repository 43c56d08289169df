"""Personal data (AVG/GDPR): erasure on request, and anonymising after the event.

Anonymising keeps the row (counts, statuses, attendance stay true) and
replaces everything that identifies a person. The token is replaced too, so
old personal links stop working.
"""
from datetime import datetime, timedelta

from sqlalchemy import select, update

from ..events.models import Event
from ..extensions import db
from ..outbox.models import Message
from ..transaction import unit_of_work
from ..types import utcnow
from .models import Registration, new_token
from .services import cancel_registration_in_transaction


def _anonymise(registration: Registration) -> None:
    registration.name = "—"
    registration.email = registration.email_normalized = f"verwijderd-{registration.id}@invalid"
    registration.organisation = registration.role = ""
    registration.token = new_token()
    # Nothing that was queued for this person may still go out.
    db.session.execute(update(Message).where(Message.registration_id == registration.id,
                                             Message.status == "pending").values(status="superseded"))


def erase_registration(registration: Registration, *, now: datetime | None = None) -> None:
    """The registrant removes their own data: the seat is given up (and passed on), the data erased."""
    now = now or utcnow()

    def work():
        cancel_registration_in_transaction(registration, now=now, notify=False)
        _anonymise(registration)

    unit_of_work(work)


def purge_ended(*, after_days: int, now: datetime | None = None) -> int:
    """Anonymise the registrations of events that ended more than `after_days` ago."""
    now = now or utcnow()
    cutoff = now - timedelta(days=after_days)

    def work():
        rows = db.session.scalars(
            select(Registration).join(Event)
            .where(Event.ends_at < cutoff, ~Registration.email_normalized.like("verwijderd-%@invalid"))).all()
        for registration in rows:
            _anonymise(registration)
        return len(rows)

    return unit_of_work(work)
