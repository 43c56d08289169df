"""Organiser accounts and logging in, with a lock after repeated failures."""
import secrets
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from ..errors import ServiceError
from ..extensions import db
from ..transaction import unit_of_work
from ..types import utcnow
from .models import Organiser

MAX_FAILED_LOGINS = 5
LOCK_DURATION = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12


def create_organiser(email: str, name: str, password: str | None = None) -> tuple[Organiser, str]:
    """Create an organiser; returns it with the password (generated when none is given)."""
    password = password or secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServiceError(_l("Een wachtwoord heeft minstens %(n)d tekens.", n=MIN_PASSWORD_LENGTH))
    email = email.strip().lower()

    def work():
        if db.session.scalar(select(Organiser).where(Organiser.email == email)):
            raise ServiceError(_l("Er is al een organisator met dit e-mailadres."))
        organiser = Organiser(email=email, name=name.strip())
        organiser.set_password(password)
        db.session.add(organiser)
        return organiser

    return unit_of_work(work), password


def authenticate(email: str, password: str, *, now: datetime | None = None) -> Organiser:
    """The organiser for these credentials, or a refusal that does not say which part was wrong."""
    now = now or utcnow()
    wrong = ServiceError(_l("Onjuist e-mailadres of wachtwoord."))
    organiser = db.session.scalar(select(Organiser).where(Organiser.email == (email or "").strip().lower()))
    if organiser is None:
        Organiser(password_hash="").set_password(password or "x")  # same work as a real check
        raise wrong
    if organiser.locked_until and organiser.locked_until > now:
        raise ServiceError(_l("Te veel mislukte pogingen. Probeer het over een kwartier opnieuw."))
    if not organiser.check_password(password or ""):
        def fail():
            organiser.failed_logins += 1
            if organiser.failed_logins >= MAX_FAILED_LOGINS:
                organiser.failed_logins, organiser.locked_until = 0, now + LOCK_DURATION
        unit_of_work(fail)
        raise wrong

    def succeed():
        organiser.failed_logins, organiser.locked_until = 0, None
    unit_of_work(succeed)
    return organiser
