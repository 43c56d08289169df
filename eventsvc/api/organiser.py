"""Organiser endpoints: bearer tokens; the same services as the web pages."""

from flask import g, request
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select

from ..auth.tokens import organiser_for_token
from ..events import management
from ..events.models import Event
from ..events.services import possible_slug
from ..extensions import db
from ..outbox.models import Message
from ..registrations.models import Registration
from ..registrations.services import cancel_registration
from ..search import any_contains
from ..webhooks.models import Webhook
from ..webhooks.services import create_webhook, deactivate_webhook
from . import problems
from .public import event_out
from .schemas import (CancelSchema, DeliveryCountSchema, EventInSchema, EventPatchSchema, EventSchema,
                      QueuedSchema, RegistrationPageSchema, RegistrationQuerySchema, RegistrationSchema,
                      RescheduleSchema, WebhookCreatedSchema, WebhookDeliverySchema, WebhookInSchema,
                      WebhookSchema)

blp = Blueprint("api_organiser", __name__, url_prefix="/api/v1", description="Organisers (bearer token).")
SECURITY = [{"bearerAuth": []}]


@blp.before_request
def require_token():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    organiser = organiser_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if organiser is None:
        abort(401, message="Geef een geldige API-sleutel mee: Authorization: Bearer <sleutel>.")
    g.organiser = organiser


def documented(func_):
    """Every organiser operation: bearer auth and its refusals, in the document."""
    decorated = blp.doc(security=SECURITY)(func_)
    decorated = problems(blp, {401: "Missing or invalid token"})(decorated)
    return decorated


def _event(slug) -> Event:
    event = db.session.scalar(select(Event).where(Event.slug == slug)) if possible_slug(slug) else None
    if event is None:
        abort(404, message="Deze bijeenkomst bestaat niet.")
    return event


@blp.post("/events")
@blp.arguments(EventInSchema)
@blp.response(201, EventSchema)
@problems(blp, {422: "Invalid input"})
@documented
def create_event(data):
    """Create a session (as a draft)."""
    data.setdefault("timezone", "Europe/Amsterdam")
    return event_out(management.create_event(**data))


@blp.patch("/events/<slug>")
@blp.arguments(EventPatchSchema)
@blp.response(200, EventSchema)
@problems(blp, {404: "No such session", 409: "The change conflicts with the session's state", 422: "Invalid input"})
@documented
def update_event(data, slug):
    """Change a session. A new time goes through /reschedule, which tells the registrants."""
    event = _event(slug)
    times = (data.get("starts_at", event.starts_at), data.get("ends_at", event.ends_at))
    if times != (event.starts_at, event.ends_at):
        abort(409, message="Gebruik /reschedule om het tijdstip te wijzigen; dan krijgt iedereen bericht.")
    return event_out(management.update_event(event, **data))


@blp.post("/events/<slug>/publish")
@blp.response(200, EventSchema)
@problems(blp, {404: "No such session",
                 409: "Cannot be published (cancelled)",
                 422: "Missing data, e.g. a join URL for an online session"})
@documented
def publish_event(slug):
    """Publish a draft session."""
    return event_out(management.publish_event(_event(slug)))


@blp.post("/events/<slug>/reschedule")
@blp.arguments(RescheduleSchema)
@blp.response(200, QueuedSchema)
@problems(blp, {404: "No such session", 409: "Cancelled, or already at this time", 422: "Invalid input"})
@documented
def reschedule(data, slug):
    """Move a session; every registrant gets one notice with the updated invite."""
    queued = management.reschedule_event(_event(slug), starts_at=data["starts_at"], ends_at=data["ends_at"],
                                         reason=data["reason"], by=g.organiser)
    return {"queued": queued}


@blp.post("/events/<slug>/cancel")
@blp.arguments(CancelSchema)
@blp.response(200, QueuedSchema)
@problems(blp, {404: "No such session", 409: "Already cancelled", 422: "Invalid input"})
@documented
def cancel(data, slug):
    """Cancel a session; every registrant gets a calendar cancellation."""
    return {"queued": management.cancel_event(_event(slug), reason=data["reason"], by=g.organiser)}


@blp.get("/events/<slug>/registrations")
@blp.arguments(RegistrationQuerySchema, location="query")
@blp.response(200, RegistrationPageSchema)
@problems(blp, {404: "No such session"})
@documented
def list_registrations(query, slug):
    """Registrations, oldest first, with paging and filters."""
    event = _event(slug)
    statement = select(Registration).where(Registration.event_id == event.id)
    if query.get("status"):
        statement = statement.where(Registration.status == query["status"])
    if query.get("q"):
        statement = statement.where(any_contains(query["q"].lower(), func.lower(Registration.name),
                                                 Registration.email_normalized))
    total = db.session.scalar(select(func.count()).select_from(statement.subquery()))
    page, size = query["page"], query["page_size"]
    items = db.session.scalars(statement.order_by(Registration.registered_at, Registration.id)
                               .offset((page - 1) * size).limit(size)).all()
    return {"items": items, "page": page, "page_size": size, "total": total}


@blp.post("/events/<slug>/registrations/<id:registration_id>/cancel")
@blp.response(200, RegistrationSchema)
@problems(blp, {404: "No such session or registration"})
@documented
def cancel_one(slug, registration_id):
    """Cancel a registration: frees the seat and promotes the first on the waiting list."""
    event = _event(slug)
    registration = db.session.get(Registration, registration_id)
    if registration is None or registration.event_id != event.id:
        abort(404, message="Deze aanmelding bestaat niet.")
    cancel_registration(registration)
    db.session.refresh(registration)
    return registration


@blp.get("/events/<slug>/deliveries")
@blp.response(200, DeliveryCountSchema(many=True))
@problems(blp, {404: "No such session"})
@documented
def deliveries(slug):
    """The outbox's state for this session: notices per kind and status."""
    event = _event(slug)
    rows = db.session.execute(select(Message.kind, Message.status, func.count())
                              .where(Message.event_id == event.id).group_by(Message.kind, Message.status)
                              .order_by(Message.kind, Message.status)).all()
    return [{"kind": kind, "status": status, "count": n} for kind, status, n in rows]


@blp.get("/webhooks")
@blp.response(200, WebhookSchema(many=True))
@documented
def list_webhooks():
    """Active webhooks."""
    return db.session.scalars(select(Webhook).where(Webhook.is_active.is_(True)).order_by(Webhook.id)).all()


@blp.post("/webhooks")
@blp.arguments(WebhookInSchema)
@blp.response(201, WebhookCreatedSchema)
@problems(blp, {422: "Invalid input"})
@documented
def add_webhook(data):
    """Register a URL for signed notices. The secret is shown in this answer only."""
    from ..webhooks.models import EVENT_TYPES

    return create_webhook(url=data["url"], secret=data.get("secret"),
                          event_types=tuple(data.get("event_types") or EVENT_TYPES), organiser=g.organiser)


def _webhook(webhook_id) -> Webhook:
    hook = db.session.get(Webhook, webhook_id)
    if hook is None or not hook.is_active:
        abort(404, message="Deze webhook bestaat niet.")
    return hook


@blp.delete("/webhooks/<id:webhook_id>")
@blp.response(204)
@problems(blp, {404: "No such webhook"})
@documented
def remove_webhook(webhook_id):
    """Stop a webhook; unsent notices to it are dropped."""
    deactivate_webhook(_webhook(webhook_id))


@blp.get("/webhooks/<id:webhook_id>/deliveries")
@blp.response(200, WebhookDeliverySchema(many=True))
@problems(blp, {404: "No such webhook"})
@documented
def webhook_deliveries(webhook_id):
    """The latest 200 notices to this webhook with their delivery state."""
    hook = _webhook(webhook_id)
    rows = db.session.scalars(select(Message).where(Message.kind == "webhook").order_by(Message.id.desc())
                              .limit(2000)).all()
    return [m for m in rows if m.payload.get("webhook_id") == hook.id][:200]
