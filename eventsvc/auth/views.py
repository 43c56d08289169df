from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from ..errors import ServiceError
from .services import authenticate

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mailadres"), validators=[DataRequired(_l("Vul uw e-mailadres in.")), Length(max=254)])
    password = PasswordField(_l("Wachtwoord"), validators=[DataRequired(_l("Vul uw wachtwoord in.")),
                                                           Length(max=200)])


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("admin.events")
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else url_for("admin.events")


@bp.route("/inloggen", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        try:
            organiser = authenticate(form.email.data, form.password.data)
        except ServiceError as error:
            form.form_errors.append(str(error.message))
        else:
            login_user(organiser)
            return redirect(_safe_next(request.args.get("next")), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.post("/uitloggen")
def logout():
    form = FlaskForm()
    if form.validate_on_submit():
        logout_user()
        flash(_("U bent uitgelogd."), "success")
    return redirect(url_for("auth.login"), 303)
