"""Organiser forms. Dates and times are entered in the event's own time zone."""
from datetime import datetime, time
from zoneinfo import ZoneInfo, available_timezones

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, IntegerField, SelectField, StringField, TextAreaField, TimeField
from wtforms.fields import DateTimeLocalField, URLField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from ..validators import email_address, single_line, strip

ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


def local_to_utc(day, at: time, zone: str) -> datetime:
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(ZoneInfo("UTC"))


def valid_zone(form, field):
    if field.data not in available_timezones():
        raise ValidationError(_l("Kies een geldige tijdzone, zoals Europe/Amsterdam."))


def web_address(form, field):
    if field.data and not field.data.startswith(("https://", "http://")):
        raise ValidationError(_l("Vul een webadres in dat begint met https://."))


def optional_email(form, field):
    if field.data:
        email_address(form, field)


def _line(label, max_length, required=False, extra=()):
    validators = [DataRequired(_l("Dit veld is verplicht."))] if required else [Optional()]
    validators += [Length(max=max_length, message=_l("Hoogstens %(max)d tekens.")), single_line, *extra]
    return StringField(label, filters=[strip], validators=validators)


class ScheduleFields:
    date = DateField(_l("Datum"), validators=[DataRequired(_l("Vul een geldige datum in."))])
    start = TimeField(_l("Begintijd"), validators=[DataRequired(_l("Vul een geldige begintijd in."))])
    end = TimeField(_l("Eindtijd"), validators=[DataRequired(_l("Vul een geldige eindtijd in."))])

    def times(self, zone: str) -> tuple[datetime, datetime]:
        return local_to_utc(self.date.data, self.start.data, zone), local_to_utc(self.date.data, self.end.data, zone)

    def validate_end(self, field):
        if self.start.data and field.data and field.data <= self.start.data:
            raise ValidationError(_l("Het einde moet na het begin liggen."))


class EventForm(ScheduleFields, FlaskForm):
    title = _line(_l("Titel"), 200, required=True)
    summary = _line(_l("Samenvatting"), 500)
    description = TextAreaField(_l("Beschrijving (Markdown)"), filters=[strip],
                                validators=[Optional(), Length(max=20000, message=_l("Hoogstens %(max)d tekens."))])
    audience = _line(_l("Voor wie?"), 300)
    region = _line(_l("Regio"), 100)
    organised_by = _line(_l("Organisatie"), 300)
    contact_name = _line(_l("Contactpersoon"), 200)
    contact_email = StringField(_l("E-mailadres contactpersoon"), filters=[strip],
                                validators=[Optional(), Length(max=254), optional_email])
    mode = SelectField(_l("Vorm"), choices=[SelectChoice("online", _l("Online")),
                                            SelectChoice("onsite", _l("Op locatie")),
                                            SelectChoice("hybrid", _l("Hybride"))])
    location = _line(_l("Locatie"), 300)
    join_url = URLField(_l("Link voor deelname (geheim, alleen voor aangemelde deelnemers)"), filters=[strip],
                        validators=[Optional(), Length(max=2000), web_address, single_line])
    timezone = SelectField(_l("Tijdzone"), choices=[SelectChoice(z) for z in ZONES], default="Europe/Amsterdam",
                           validators=[valid_zone], validate_choice=False)
    capacity = IntegerField(_l("Aantal plaatsen (leeg = onbeperkt)"), validators=[
        Optional(), NumberRange(min=0, max=100000, message=_l("Kies een aantal tussen %(min)s en %(max)s."))])
    registration_opens_at = DateTimeLocalField(_l("Aanmelden kan vanaf"), validators=[Optional()])
    registration_closes_at = DateTimeLocalField(_l("Aanmelden kan tot"), validators=[Optional()])
    reminder_lead_minutes = IntegerField(_l("Herinnering met link, minuten voor het begin"), validators=[
        Optional(), NumberRange(min=0, max=10080, message=_l("Kies een aantal tussen %(min)s en %(max)s."))])
    day_before_reminder = BooleanField(_l("Ook een herinnering de dag ervoor"))

    def event_fields(self) -> dict:
        zone = self.timezone.data
        starts_at, ends_at = self.times(zone)
        fields = {name: getattr(self, name).data for name in (
            "title", "summary", "description", "audience", "region", "organised_by", "contact_name",
            "contact_email", "mode", "location", "join_url", "timezone", "capacity", "reminder_lead_minutes",
            "day_before_reminder")}
        for name in ("title", "summary", "description", "audience", "region", "organised_by", "contact_name",
                     "contact_email", "location", "join_url"):
            fields[name] = fields[name] or ""
        for name in ("registration_opens_at", "registration_closes_at"):
            value = getattr(self, name).data
            fields[name] = value.replace(tzinfo=ZoneInfo(zone)) if value else None
        return dict(fields, starts_at=starts_at, ends_at=ends_at)

    def fill_from(self, event):
        local_start, local_end = event.starts_at.astimezone(event.tz), event.ends_at.astimezone(event.tz)
        self.date.data, self.start.data, self.end.data = local_start.date(), local_start.time(), local_end.time()
        for name in ("registration_opens_at", "registration_closes_at"):
            value = getattr(event, name)
            getattr(self, name).data = value.astimezone(event.tz).replace(tzinfo=None) if value else None


class RescheduleForm(ScheduleFields, FlaskForm):
    reason = _line(_l("Reden (wordt op de pagina en in de e-mail getoond)"), 500, required=True)


class CancelEventForm(FlaskForm):
    reason = _line(_l("Reden (wordt op de pagina en in de e-mail getoond)"), 500, required=True)


class MessageForm(FlaskForm):
    subject = _line(_l("Onderwerp"), 150, required=True)
    body = TextAreaField(_l("Tekst"), filters=[strip], validators=[
        DataRequired(_l("Dit veld is verplicht.")), Length(max=10000, message=_l("Hoogstens %(max)d tekens."))])
    include_waitlist = BooleanField(_l("Ook aan de wachtlijst sturen"))


class PageForm(FlaskForm):
    title = _line(_l("Titel"), 200, required=True)
    body = TextAreaField(_l("Tekst (Markdown)"), filters=[strip], validators=[
        DataRequired(_l("Dit veld is verplicht.")), Length(max=50000, message=_l("Hoogstens %(max)d tekens."))])
