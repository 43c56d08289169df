"""API tokens: created once, shown once, stored as a hash, revocable."""
import hashlib
import secrets

from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from ..errors import ServiceError
from ..extensions import db
from ..transaction import unit_of_work
from ..types import utcnow
from .models import ApiToken, Organiser

PREFIX = "evs_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(organiser: Organiser, name: str) -> tuple[ApiToken, str]:
    """Returns the token row and the token itself, which is never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError(_l("Geef de sleutel een naam van hoogstens 100 tekens."), field="name")
    token = PREFIX + secrets.token_urlsafe(32)

    def work():
        row = ApiToken(organiser_id=organiser.id, name=name, token_hash=_hash(token), prefix=token[:10])
        db.session.add(row)
        return row

    return unit_of_work(work), token


def revoke_api_token(token: ApiToken) -> None:
    unit_of_work(lambda: db.session.execute(
        update(ApiToken).where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())))


def organiser_for_token(token: str) -> Organiser | None:
    """The organiser behind a bearer token, or None. Lookup by hash: the token
    itself is never compared, so there is no timing signal to learn it from."""
    if not token or not token.startswith(PREFIX) or len(token) > 100:
        return None
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token),
                                                   ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        unit_of_work(lambda: db.session.execute(
            update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)))
    return row.organiser


def tokens_of(organiser: Organiser) -> list[ApiToken]:
    return db.session.scalars(select(ApiToken).where(ApiToken.organiser_id == organiser.id)
                              .order_by(ApiToken.created_at.desc())).all()
