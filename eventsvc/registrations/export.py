"""CSV export that opens cleanly in Excel and LibreOffice with Dutch settings."""
import csv
import io

from sqlalchemy import select

from ..extensions import db
from ..formatting import format_moment
from .models import Registration

HEADER = ["Naam", "E-mailadres", "Organisatie", "Functie", "Status", "Aangemeld op",
          "Reactie op verplaatsing", "Eerste keer deelgenomen"]
STATUS = {"confirmed": "aangemeld", "waitlisted": "wachtlijst", "cancelled": "geannuleerd"}


def _cell(value) -> str:
    # A cell starting with = + - @ would be run as a formula by spreadsheets.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def registrations_csv(event) -> str:
    """UTF-8 with BOM (Excel detects the encoding), semicolons (the Dutch list separator), CRLF."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(HEADER)
    rows = db.session.scalars(select(Registration).where(Registration.event_id == event.id)
                              .order_by(Registration.registered_at, Registration.id))
    for r in rows:
        writer.writerow([_cell(v) for v in (
            r.name, r.email, r.organisation, r.role, STATUS[r.status],
            format_moment(r.registered_at, event.tz), {"attending": "komt", "declined": "komt niet"}.get(
                r.reschedule_response or "", ""),
            format_moment(r.first_joined_at, event.tz) if r.first_joined_at else "")])
    return out.getvalue()
