"""The organiser workspace. One guard covers every route of this blueprint."""
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, ngettext
from flask_login import current_user, login_required
from flask_wtf import FlaskForm

from ..errors import ServiceError
from ..events import management
from ..events.forms import CancelEventForm, EventForm, MessageForm, RescheduleForm
from ..events.models import Event
from ..extensions import db
from ..registrations.export import registrations_csv
from ..registrations.models import Registration
from ..registrations.services import cancel_registration, promote_registration
from . import queries

bp = Blueprint("admin", __name__, url_prefix="/beheer")


@bp.before_request
@login_required
def require_organiser():
    """Every organiser page and action needs a logged-in organiser."""


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _event_or_404(event_id: int) -> Event:
    event = db.session.get(Event, event_id)
    if event is None:
        abort(404)
    return event


def _refused(form, error: ServiceError):
    field = getattr(form, error.field, None) if error.field else None
    (field.errors.append if field is not None else form.form_errors.append)(str(error.message))


@bp.get("/")
def events():
    return render_template("admin/events.html", rows=queries.events_with_counts())


@bp.route("/nieuw", methods=["GET", "POST"])
def create():
    form = EventForm()
    if form.validate_on_submit():
        try:
            event = management.create_event(**form.event_fields())
        except ServiceError as error:
            _refused(form, error)
        else:
            flash(_("De bijeenkomst is aangemaakt als concept."), "success")
            return redirect(url_for("admin.show", event_id=event.id), 303)
    return render_template("admin/event_form.html", form=form, event=None), 422 if form.errors else 200


@bp.route("/<id:event_id>/bewerken", methods=["GET", "POST"])
def edit(event_id):
    event = _event_or_404(event_id)
    form = EventForm(obj=event)
    if request.method == "GET":
        form.fill_from(event)
    if form.validate_on_submit():
        fields = form.event_fields()
        try:
            if (fields["starts_at"], fields["ends_at"]) != (event.starts_at, event.ends_at) \
                    and queries.active_registrant_count(event):
                raise ServiceError(_("Er zijn al aanmeldingen: gebruik ‘Verplaatsen’, dan krijgt iedereen bericht."),
                                   field="date")
            management.update_event(event, **fields)
        except ServiceError as error:
            _refused(form, error)
        else:
            flash(_("De wijzigingen zijn opgeslagen."), "success")
            return redirect(url_for("admin.show", event_id=event.id), 303)
    return render_template("admin/event_form.html", form=form, event=event), 422 if form.errors or form.form_errors else 200


@bp.get("/<id:event_id>")
def show(event_id):
    event = _event_or_404(event_id)
    query, status = request.args.get("q", "")[:100], request.args.get("status", "")
    return render_template("admin/event.html", event=event, form=FlaskForm(), query=query, status=status,
                           registrations=queries.registrations_of(event, query=query, status=status))


def _action(event_id, do, success):
    event = _event_or_404(event_id)
    if FlaskForm().validate_on_submit():
        try:
            do(event)
        except ServiceError as error:
            flash(str(error.message), "error")
        else:
            flash(success, "success")
    return redirect(url_for("admin.show", event_id=event.id), 303)


@bp.post("/<id:event_id>/publiceren")
def publish(event_id):
    return _action(event_id, management.publish_event, _("De bijeenkomst is gepubliceerd."))


@bp.post("/<id:event_id>/verbergen")
def unpublish(event_id):
    return _action(event_id, management.unpublish_event, _("De bijeenkomst is weer een concept."))


@bp.post("/<id:event_id>/dupliceren")
def duplicate(event_id):
    event = _event_or_404(event_id)
    if not FlaskForm().validate_on_submit():
        abort(400)
    copy = management.duplicate_event(event)
    flash(_("Kopie aangemaakt. Pas de datum aan en publiceer haar."), "success")
    return redirect(url_for("admin.edit", event_id=copy.id), 303)


@bp.route("/<id:event_id>/verplaatsen", methods=["GET", "POST"])
def reschedule(event_id):
    event = _event_or_404(event_id)
    form = RescheduleForm()
    if request.method == "GET":
        local = event.starts_at.astimezone(event.tz)
        form.date.data, form.start.data, form.end.data = local.date(), local.time(), event.ends_at.astimezone(event.tz).time()
    if form.validate_on_submit():
        starts_at, ends_at = form.times(event.timezone)
        try:
            told = management.reschedule_event(event, starts_at=starts_at, ends_at=ends_at,
                                               reason=form.reason.data, by=current_user)
        except ServiceError as error:
            _refused(form, error)
        else:
            flash(ngettext("De bijeenkomst is verplaatst. %(num)d deelnemer krijgt bericht met een nieuwe agenda-uitnodiging.",
                           "De bijeenkomst is verplaatst. %(num)d deelnemers krijgen bericht met een nieuwe agenda-uitnodiging.",
                           told), "success")
            return redirect(url_for("admin.show", event_id=event.id), 303)
    return render_template("admin/reschedule.html", form=form, event=event,
                           to_tell=queries.active_registrant_count(event)), 422 if form.errors else 200


@bp.route("/<id:event_id>/annuleren", methods=["GET", "POST"])
def cancel(event_id):
    event = _event_or_404(event_id)
    form = CancelEventForm()
    if form.validate_on_submit():
        try:
            told = management.cancel_event(event, reason=form.reason.data, by=current_user)
        except ServiceError as error:
            _refused(form, error)
        else:
            flash(ngettext("De bijeenkomst is geannuleerd. %(num)d deelnemer krijgt bericht.",
                           "De bijeenkomst is geannuleerd. %(num)d deelnemers krijgen bericht.", told), "success")
            return redirect(url_for("admin.show", event_id=event.id), 303)
    return render_template("admin/cancel.html", form=form, event=event,
                           to_tell=queries.active_registrant_count(event)), 422 if form.errors else 200


@bp.get("/<id:event_id>/aanmeldingen.csv")
def export(event_id):
    event = _event_or_404(event_id)
    return Response(registrations_csv(event), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="aanmeldingen-{event.slug}.csv"'})


def _registration_of(event, registration_id) -> Registration:
    registration = db.session.get(Registration, registration_id)
    if registration is None or registration.event_id != event.id:
        abort(404)
    return registration


@bp.post("/<id:event_id>/aanmeldingen/<id:registration_id>/annuleren")
def cancel_registration_view(event_id, registration_id):
    event = _event_or_404(event_id)
    registration = _registration_of(event, registration_id)
    return _action(event_id, lambda e: cancel_registration(registration),
                   _("De aanmelding is geannuleerd; de deelnemer krijgt bericht."))


@bp.post("/<id:event_id>/aanmeldingen/<id:registration_id>/plaatsen")
def promote(event_id, registration_id):
    event = _event_or_404(event_id)
    registration = _registration_of(event, registration_id)
    return _action(event_id, lambda e: promote_registration(registration),
                   _("De deelnemer heeft een plaats gekregen en krijgt bericht."))


@bp.get("/<id:event_id>/berichten")
def delivery(event_id):
    event = _event_or_404(event_id)
    counts, latest = queries.delivery_of(event)
    return render_template("admin/delivery.html", event=event, counts=counts, latest=latest, form=FlaskForm())


@bp.post("/<id:event_id>/berichten/opnieuw")
def retry(event_id):
    event = _event_or_404(event_id)
    if not FlaskForm().validate_on_submit():
        abort(400)
    message_id = request.form.get("message_id", type=int)
    n = management.retry_failed(event, message_id=message_id)
    flash(ngettext("%(num)d bericht wordt opnieuw verstuurd.", "%(num)d berichten worden opnieuw verstuurd.", n),
          "success")
    return redirect(url_for("admin.delivery", event_id=event.id), 303)


@bp.route("/<id:event_id>/bericht", methods=["GET", "POST"])
def message(event_id):
    event = _event_or_404(event_id)
    form = MessageForm()
    preview = None
    if form.validate_on_submit():
        if request.form.get("action") == "send":
            n = management.message_registrants(event, subject=form.subject.data, body=form.body.data,
                                               include_waitlist=form.include_waitlist.data)
            flash(ngettext("Het bericht gaat naar %(num)d deelnemer.", "Het bericht gaat naar %(num)d deelnemers.", n),
                  "success")
            return redirect(url_for("admin.delivery", event_id=event.id), 303)
        preview = {"subject": form.subject.data, "body": form.body.data}
    return render_template("admin/message.html", form=form, event=event, preview=preview), \
        422 if form.errors else 200


@bp.route("/koppelingen", methods=["GET", "POST"])
def integrations():
    """API keys and webhooks, with the delivery state of each webhook."""
    from ..auth.tokens import create_api_token, tokens_of
    from ..webhooks.services import create_webhook

    form, new_token = FlaskForm(), None
    if form.validate_on_submit():
        try:
            if request.form.get("action") == "token":
                new_token = create_api_token(current_user, request.form.get("name", ""))[1]
            elif request.form.get("action") == "webhook":
                hook = create_webhook(url=request.form.get("url", ""), organiser=current_user)
                flash(_("Webhook toegevoegd. Het geheim voor de handtekening: %(secret)s", secret=hook.secret),
                      "success")
        except ServiceError as error:
            flash(str(error.message), "error")
    return render_template("admin/integrations.html", form=form, new_token=new_token,
                           tokens=tokens_of(current_user), webhooks=queries.webhooks_with_counts())


@bp.post("/koppelingen/sleutel/<id:token_id>/intrekken")
def revoke_token(token_id):
    from ..auth.models import ApiToken
    from ..auth.tokens import revoke_api_token

    token = db.session.get(ApiToken, token_id)
    if token is None or token.organiser_id != current_user.id or not FlaskForm().validate_on_submit():
        abort(404)
    revoke_api_token(token)
    flash(_("De sleutel is ingetrokken."), "success")
    return redirect(url_for("admin.integrations"), 303)


@bp.post("/koppelingen/webhook/<id:webhook_id>/stoppen")
def stop_webhook(webhook_id):
    from ..webhooks.models import Webhook
    from ..webhooks.services import deactivate_webhook

    hook = db.session.get(Webhook, webhook_id)
    if hook is None or not FlaskForm().validate_on_submit():
        abort(404)
    deactivate_webhook(hook)
    flash(_("De webhook is gestopt."), "success")
    return redirect(url_for("admin.integrations"), 303)


@bp.route("/privacy", methods=["GET", "POST"])
def privacy():
    """The privacy statement shown next to the registration form."""
    from ..events.forms import PageForm
    from ..pages.services import privacy_page, save_privacy_page

    page = privacy_page()
    form = PageForm(obj=page)
    if form.validate_on_submit():
        save_privacy_page(title=form.title.data, body=form.body.data)
        flash(_("De privacyverklaring is opgeslagen."), "success")
        return redirect(url_for("admin.privacy"), 303)
    return render_template("admin/privacy.html", form=form, page=page), 422 if form.errors else 200
