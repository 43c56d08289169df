"""The privacy statement: a default text until an organiser writes their own."""
from flask_babel import gettext as _

from ..extensions import db
from ..transaction import unit_of_work
from .models import Page

PRIVACY = "privacy"


def default_privacy() -> Page:
    return Page(slug=PRIVACY, title=_("Privacyverklaring"), body=_(
        "Als u zich aanmeldt, bewaren wij uw naam, e-mailadres, organisatie en functie. "
        "We gebruiken ze alleen voor deze bijeenkomst: om u een bevestiging, een agenda-uitnodiging, "
        "wijzigingen en de link om deel te nemen te sturen, en om de organisatoren te laten zien wie er komt.\n\n"
        "U kunt uw aanmelding altijd annuleren en uw gegevens zelf verwijderen via de link in uw bevestiging. "
        "Na afloop van de bijeenkomst maken wij uw gegevens na een vaste termijn onherkenbaar; alleen de "
        "aantallen blijven bewaard.\n\n"
        "Vragen over uw gegevens? Neem contact op met de contactpersoon van de bijeenkomst."))


def privacy_page() -> Page:
    return db.session.get(Page, PRIVACY) or default_privacy()


def save_privacy_page(*, title: str, body: str) -> Page:
    def work():
        page = db.session.get(Page, PRIVACY) or Page(slug=PRIVACY)
        page.title, page.body = title.strip(), body.strip()
        db.session.add(page)
        return page

    return unit_of_work(work)
