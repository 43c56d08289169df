"""Field validators shared by the forms (and the API)."""
import unicodedata

from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from wtforms.validators import ValidationError


def has_control_characters(value: str) -> bool:
    # CR/LF, NUL, tabs and other controls, plus Unicode line/paragraph separators.
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in value or "")


def single_line(form, field):
    if has_control_characters(field.data or ""):
        raise ValidationError(_l("Gebruik alleen gewone tekens op één regel (geen regeleinden of stuurtekens)."))


def email_address(form, field):
    value = (field.data or "").strip()
    if has_control_characters(value):
        raise ValidationError(_l("Vul een geldig e-mailadres in, zoals naam@voorbeeld.nl."))
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise ValidationError(_l("Vul een geldig e-mailadres in, zoals naam@voorbeeld.nl."))


def strip(value):
    return value.strip() if isinstance(value, str) else value
