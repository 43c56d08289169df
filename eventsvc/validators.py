"""Field validators shared by the forms (and the API)."""
import re

from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from wtforms.validators import ValidationError


# CR/LF, NUL, tabs and other controls, plus Unicode line/paragraph separators: the code points
# of the Unicode categories Cc, Cs, Zl and Zp (a test checks this against unicodedata), found by
# one regular-expression scan instead of a category lookup per character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def has_control_characters(value: str) -> bool:
    return _CONTROL.search(value or "") is not None


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
