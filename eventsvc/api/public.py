"""Public endpoints: no credentials, CORS open, same rules as the web form."""
from flask_cors import CORS
from flask_smorest import Blueprint, abort

from ..events import services as events
from ..registrations.services import register
from ..urls import external_url
from . import problems
from .schemas import EventQuerySchema, EventSchema, RegistrationInSchema, RegistrationResultSchema

blp = Blueprint("api_public", __name__, url_prefix="/api/v1", description="Public: sessions and registering.")
CORS(blp, methods=["GET", "POST"], allow_headers=["Content-Type"], max_age=3600)

MESSAGES = {
    "confirmed": "U bent aangemeld. U ontvangt een bevestiging met een agenda-uitnodiging per e-mail.",
    "waitlisted": "De bijeenkomst is vol. U staat op de wachtlijst en krijgt bericht zodra er een plaats vrijkomt.",
}


def _public_event(slug):
    event = events.get_public_event(slug)
    if event is None:
        abort(404, message="Deze bijeenkomst bestaat niet.")
    return event


def event_out(event) -> dict:
    data = {name: getattr(event, name) for name in EventSchema().fields if hasattr(event, name)}
    data["url"] = external_url("events.show", slug=event.slug)
    return data


@blp.get("/events")
@blp.arguments(EventQuerySchema, location="query")
@blp.response(200, EventSchema(many=True))
def list_events(query):
    """Published sessions that have not ended, soonest first (cancelled ones included, marked)."""
    found = events.list_upcoming(audience=query.get("audience"))
    if query.get("from_"):
        found = [e for e in found if e.starts_at >= query["from_"]]
    if query.get("to"):
        found = [e for e in found if e.starts_at <= query["to"]]
    return [event_out(e) for e in found]


@blp.get("/events/<slug>")
@blp.response(200, EventSchema)
@problems(blp, {404: "No such public session"})
def get_event(slug):
    """One session."""
    return event_out(_public_event(slug))


@blp.post("/events/<slug>/registrations")
@blp.arguments(RegistrationInSchema)
@blp.response(201, RegistrationResultSchema)
@problems(blp, {404: "No such public session",
                 409: "Registration is closed (not open yet, closed, started, cancelled)",
                 422: "Invalid input"})
def create_registration(data, slug):
    """Register. The answer never reveals whether the address was registered before."""
    event = _public_event(slug)
    result = register(event, name=data["name"], email=data["email"], organisation=data.get("organisation", ""),
                      role=data.get("role", ""), locale=data["locale"])
    return {"status": result.shown_status, "message": MESSAGES[result.shown_status]}
