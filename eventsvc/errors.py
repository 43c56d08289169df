"""Domain refusals and the error pages."""
from flask import render_template, request
from sqlalchemy.exc import InterfaceError, OperationalError

from .extensions import db


class ServiceError(Exception):
    """A refusal with a message meant for people; `field` names the form field."""

    status_code = 422

    def __init__(self, message, field=None):
        super().__init__(str(message))
        self.message = message
        self.field = field


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


def _wants_json():
    return request.path.startswith("/api/")


def _error_page(status, title, text):
    if status >= 500:
        db.session.rollback()  # whatever this request did is not kept, and the session is usable again
    if _wants_json():
        from .api import problem

        return problem(status, title, detail=text)
    return render_template("errors/error.html", status=status, title=title, text=text), status


def register_error_handlers(app):
    from flask_babel import lazy_gettext as _l

    pages = {
        400: (_l("Ongeldig verzoek"), _l("Het verzoek kon niet worden verwerkt. Laad de pagina opnieuw en probeer het nog eens.")),
        403: (_l("Geen toegang"), _l("U hebt geen toegang tot deze pagina.")),
        404: (_l("Pagina niet gevonden"), _l("Deze pagina bestaat niet (meer). Controleer de link.")),
        405: (_l("Niet toegestaan"), _l("Deze actie is hier niet mogelijk.")),
        413: (_l("Te veel gegevens"), _l("Het formulier bevat meer gegevens dan wij aannemen. Maak de invoer korter.")),
        429: (_l("Te veel verzoeken"), _l("U hebt te veel verzoeken gedaan. Wacht even en probeer het dan opnieuw.")),
        500: (_l("Er ging iets mis"), _l("Er ging bij ons iets mis. Er is niets opgeslagen; probeer het later opnieuw.")),
        503: (_l("Tijdelijk niet beschikbaar"), _l("De dienst is even niet beschikbaar. Er is niets opgeslagen; probeer het over een minuut opnieuw.")),
    }
    for status, (title, text) in pages.items():
        app.register_error_handler(status, lambda e, s=status, t=title, x=text: _error_page(s, t, x))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error):
        # The database went away (restart, network): roll back what this request did.
        db.session.rollback()
        app.logger.warning("database error: %s", type(error.orig).__name__ if getattr(error, "orig", None) else error)
        title, text = pages[503]
        return _error_page(503, title, text)
