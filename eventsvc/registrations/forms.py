from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, EmailField, StringField
from wtforms.validators import DataRequired, Length

from ..sessions import Form
from ..validators import email_address, single_line, strip


class RegistrationForm(Form):
    name = StringField(_l("Naam"), filters=[strip], validators=[
        DataRequired(_l("Vul uw naam in.")),
        Length(max=200, message=_l("Uw naam mag hoogstens %(max)d tekens lang zijn.")),
        single_line])
    email = EmailField(_l("E-mailadres"), filters=[strip], validators=[
        DataRequired(_l("Vul uw e-mailadres in.")),
        Length(max=254, message=_l("Het e-mailadres mag hoogstens %(max)d tekens lang zijn.")),
        email_address])
    organisation = StringField(_l("Organisatie"), filters=[strip], validators=[
        Length(max=200, message=_l("De naam van de organisatie mag hoogstens %(max)d tekens lang zijn.")),
        single_line])
    role = StringField(_l("Functie"), filters=[strip], validators=[
        Length(max=200, message=_l("De functie mag hoogstens %(max)d tekens lang zijn.")),
        single_line])
    # Honeypot (eventsvc/security.py): out of sight for people, filled in by bots.
    website = StringField(_l("Laat dit veld leeg"), filters=[strip])
    consent = BooleanField(_l("Ik ga akkoord met de privacyverklaring (zie de link hieronder)."), validators=[
        DataRequired(_l("Geef aan dat u akkoord gaat met de privacyverklaring."))])
