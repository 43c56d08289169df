"""Demo data: two sessions a new user can register for straight away."""
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from .events.models import Event
from .extensions import db
from .types import utcnow

AMSTERDAM = ZoneInfo("Europe/Amsterdam")

ONLINE_DESCRIPTION = """\
Scholen en gemeenten werken allebei aan goed onderwijs voor ieder kind, maar
vaak langs elkaar heen. In deze online bijeenkomst verkennen we hoe
schoolbesturen en gemeenten samen sneller kunnen schakelen: van een gedeelde
agenda tot afspraken over huisvesting, kansengelijkheid en de aansluiting met
jeugdhulp.

**Programma**

- 12.45 uur: welkom en aanleiding
- 13.00 uur: drie voorbeelden uit de praktijk, van besturen en gemeenten samen
- 13.30 uur: in gesprek in kleine groepen
- 13.55 uur: afsluiting en vervolgafspraken

De bijeenkomst is gratis. Na aanmelding ontvangt u een bevestiging met een
agenda-uitnodiging, en kort voor de start een persoonlijke link waarmee u kunt
deelnemen.
"""

ONSITE_DESCRIPTION = """\
Een werksessie in kleine kring voor wie de eerste stappen uit de online
bijeenkomst samen wil uitwerken. We werken aan één concrete casus per tafel.
Er zijn weinig plaatsen; is de sessie vol, dan kunt u zich aanmelden voor de
wachtlijst. Komt er een plaats vrij, dan krijgt u die automatisch.
"""


def _at(day: datetime, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=AMSTERDAM)


def create_demo_data(now: datetime | None = None) -> list[Event]:
    """Create the demo sessions unless they exist. Idempotent; commits."""
    now = now or utcnow()
    online_day = (now + timedelta(weeks=3)).astimezone(AMSTERDAM)
    onsite_day = (now + timedelta(weeks=5)).astimezone(AMSTERDAM)
    specs = [
        dict(slug="samen-onderwijs-versnellen", title="Samen onderwijs versnellen",
             summary="Online bijeenkomst voor schoolbestuurders en gemeentelijke beleidsadviseurs in het primair onderwijs.",
             description=ONLINE_DESCRIPTION,
             audience="Schoolbestuurders en gemeentelijke beleidsadviseurs in het primair onderwijs",
             region="Landelijk", organised_by="De alliantie van Sardes, CAOP en Kennisland",
             contact_name="Mieke van den Berg", contact_email="mieke.vandenberg@example.org",
             mode="online", location="", join_url="https://meet.example.org/samen-onderwijs-versnellen",
             starts_at=_at(online_day, 12, 45), ends_at=_at(online_day, 14, 0), capacity=None),
        dict(slug="werksessie-samen-aan-tafel", title="Werksessie: samen aan tafel",
             summary="Werksessie op locatie in Utrecht, met een klein aantal plaatsen.",
             description=ONSITE_DESCRIPTION,
             audience="Schoolbestuurders en gemeentelijke beleidsadviseurs",
             region="Utrecht", organised_by="De alliantie van Sardes, CAOP en Kennisland",
             contact_name="Mieke van den Berg", contact_email="mieke.vandenberg@example.org",
             mode="onsite", location="Kennisland, Utrecht", join_url="",
             starts_at=_at(onsite_day, 10, 0), ends_at=_at(onsite_day, 12, 30), capacity=3),
    ]
    events = [_join_soon_session(now)]
    for spec in specs:
        event = db.session.scalar(select(Event).where(Event.slug == spec["slug"]))
        if event is None:
            event = Event(status="published", timezone="Europe/Amsterdam", **spec)
            db.session.add(event)
        events.append(event)
    db.session.commit()
    return events


SOON_DESCRIPTION = """\
Een korte kennismaking om het deelnemen uit te proberen: meld u aan, open de
bevestiging in de mailbox voor ontwikkelaars en gebruik uw persoonlijke link.
Die werkt vanaf een kwartier voor het begin.
"""


def _join_soon_session(now: datetime) -> Event:
    """A session whose join link opens within minutes, to try the join flow.
    Each run of the demo moves it to 20 minutes from now once it has ended."""
    event = db.session.scalar(select(Event).where(Event.slug == "kennismaking-deelnemen"))
    starts_at = (now + timedelta(minutes=20)).replace(second=0, microsecond=0)
    if event is None:
        event = Event(slug="kennismaking-deelnemen", title="Kennismaking: zo werkt deelnemen", status="published",
                      summary="Probeer de persoonlijke deelnamelink: hij werkt vanaf een kwartier voor het begin.",
                      description=SOON_DESCRIPTION, audience="Iedereen die het wil uitproberen", region="Landelijk",
                      organised_by="De alliantie van Sardes, CAOP en Kennisland",
                      contact_name="Mieke van den Berg", contact_email="mieke.vandenberg@example.org",
                      mode="online", join_url="https://meet.example.org/kennismaking", timezone="Europe/Amsterdam",
                      starts_at=starts_at, ends_at=starts_at + timedelta(minutes=45), reminder_lead_minutes=10)
        db.session.add(event)
    elif event.ends_at <= now:
        event.starts_at, event.ends_at = starts_at, starts_at + timedelta(minutes=45)
    return event


DEMO_ORGANISER = ("organisator@example.org", "Mieke van den Berg")


def create_demo_organiser() -> tuple[str, str]:
    """A demo login for the organiser pages. The password is derived from the
    instance's secret key, so it is stable for this instance and not public."""
    import hashlib

    from flask import current_app

    from .auth.models import Organiser
    from .auth.services import create_organiser

    email, name = DEMO_ORGANISER
    password = "demo-" + hashlib.sha256(f"demo:{current_app.config['SECRET_KEY']}".encode()).hexdigest()[:12]
    if db.session.scalar(select(Organiser).where(Organiser.email == email)) is None:
        create_organiser(email, name, password)
    return email, password
