"""Request and response schemas: the same limits as the web forms."""
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..validators import has_control_characters
from ..webhooks.models import EVENT_TYPES


def _single_line(value):
    if has_control_characters(value):
        raise ValidationError("Gebruik alleen gewone tekens op één regel (geen regeleinden of stuurtekens).")


def _email(value):
    if has_control_characters(value):
        raise ValidationError("Vul een geldig e-mailadres in, zoals naam@voorbeeld.nl.")
    try:
        validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise ValidationError("Vul een geldig e-mailadres in, zoals naam@voorbeeld.nl.")


def _zone(value):
    if value not in available_timezones():
        raise ValidationError("Kies een geldige tijdzone, zoals Europe/Amsterdam.")


def _web(value):
    if not value.startswith(("https://", "http://")):
        raise ValidationError("Vul een webadres in dat begint met https://.")
    _single_line(value)


def Line(max_length, required=False, **kwargs):
    return fields.String(required=required, validate=[validate.Length(min=1 if required else 0, max=max_length),
                                                      _single_line], **kwargs)


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "Messages per field"})


class ChangeSchema(Schema):
    kind = fields.String()
    reason = fields.String()
    old_starts_at = fields.AwareDateTime()
    new_starts_at = fields.AwareDateTime(allow_none=True)
    changed_at = fields.AwareDateTime()


class EventSchema(Schema):
    slug = fields.String()
    title = fields.String()
    summary = fields.String()
    description = fields.String(metadata={"description": "Markdown"})
    audience = fields.String()
    region = fields.String()
    organised_by = fields.String()
    contact_name = fields.String()
    contact_email = fields.String()
    mode = fields.String(metadata={"enum": ["online", "onsite", "hybrid"]})
    location = fields.String()
    timezone = fields.String()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    capacity = fields.Integer(allow_none=True)
    places_left = fields.Integer(allow_none=True)
    status = fields.String(metadata={"enum": ["draft", "published", "cancelled"]})
    sequence = fields.Integer()
    latest_change = fields.Nested(ChangeSchema, allow_none=True)
    url = fields.String()


class EventQuerySchema(Schema):
    audience = Line(100)
    from_ = fields.AwareDateTime(data_key="from")
    to = fields.AwareDateTime()


class EventInSchema(Schema):
    title = Line(200, required=True)
    summary = Line(500)
    description = fields.String(validate=validate.Length(max=20000))
    audience = Line(300)
    region = Line(100)
    organised_by = Line(300)
    contact_name = Line(200)
    contact_email = fields.String(validate=[validate.Length(max=254), _email])
    mode = fields.String(validate=validate.OneOf(["online", "onsite", "hybrid"]))
    location = Line(300)
    join_url = fields.String(validate=[validate.Length(max=2000), _web], load_only=True)
    timezone = fields.String(validate=_zone)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    capacity = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=100000))
    registration_opens_at = fields.AwareDateTime(allow_none=True)
    registration_closes_at = fields.AwareDateTime(allow_none=True)
    reminder_lead_minutes = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=10080))
    day_before_reminder = fields.Boolean()

    @validates_schema
    def ends_after_start(self, data, **kwargs):
        if "starts_at" in data and "ends_at" in data and data["ends_at"] <= data["starts_at"]:
            raise ValidationError("Het einde moet na het begin liggen.", field_name="ends_at")


class EventPatchSchema(EventInSchema):
    """The same fields as EventIn, each optional."""

    def __init__(self, **kwargs):
        super().__init__(partial=True, **kwargs)


class RegistrationInSchema(Schema):
    name = Line(200, required=True)
    email = fields.String(required=True, validate=[validate.Length(max=254), _email])
    organisation = Line(200)
    role = Line(200)
    consent = fields.Boolean(required=True, validate=validate.Equal(
        True, error="Geef aan dat u akkoord gaat met de privacyverklaring."))
    locale = fields.String(validate=validate.OneOf(["nl", "en"]), load_default="nl")


class RegistrationResultSchema(Schema):
    status = fields.String(metadata={"enum": ["confirmed", "waitlisted"]})
    message = fields.String()


class RegistrationSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    email = fields.String()
    organisation = fields.String()
    role = fields.String()
    status = fields.String(metadata={"enum": ["confirmed", "waitlisted", "cancelled"]})
    locale = fields.String()
    registered_at = fields.AwareDateTime()
    cancelled_at = fields.AwareDateTime(allow_none=True)
    first_joined_at = fields.AwareDateTime(allow_none=True)
    reschedule_response = fields.String(allow_none=True)


class RegistrationPageSchema(Schema):
    items = fields.List(fields.Nested(RegistrationSchema))
    page = fields.Integer()
    page_size = fields.Integer()
    total = fields.Integer()


class RegistrationQuerySchema(Schema):
    status = fields.String(validate=validate.OneOf(["confirmed", "waitlisted", "cancelled"]))
    q = fields.String(validate=validate.Length(max=100))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class RescheduleSchema(Schema):
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    reason = Line(500, required=True)


class CancelSchema(Schema):
    reason = Line(500, required=True)


class QueuedSchema(Schema):
    queued = fields.Integer(metadata={"description": "Notices queued, one per registrant"})


class DeliveryCountSchema(Schema):
    kind = fields.String()
    status = fields.String()
    count = fields.Integer()


class WebhookInSchema(Schema):
    url = fields.String(required=True, validate=[validate.Length(max=2000), _web])
    secret = fields.String(validate=validate.Length(min=16, max=200), load_only=True)
    event_types = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), validate=validate.Length(min=1))


class WebhookSchema(Schema):
    id = fields.Integer()
    url = fields.String()
    event_types = fields.Function(lambda hook: hook.event_types.split(","))
    is_active = fields.Boolean()
    created_at = fields.AwareDateTime()


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "Shown once, in this answer"})


class WebhookDeliverySchema(Schema):
    id = fields.Integer()
    type = fields.Function(lambda m: m.payload.get("type"))
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    sent_at = fields.AwareDateTime(allow_none=True)
