"""Ceiling 2: Flask + Flask-SQLAlchemy, a form and one INSERT per POST.

    DATABASE_URL=postgresql://postgres@127.0.0.1/x gunicorn -w 2 bench.ceilings.minimal_insert:app
    DATABASE_URL=sqlite:////tmp/x.sqlite3        gunicorn -w 2 bench.ceilings.minimal_insert:app

GET /e/<slug> renders a small Jinja form with a random hidden token kept in
Flask's signed session cookie (what a CSRF token costs, without Flask-WTF).
POST /e/<slug> checks the token against the cookie, inserts one row and
answers 303. SQLite runs in WAL mode with the same pragmas as the app. The
table is created on first use (`bench_ceiling_rows`), so it can share the
benchmark's throw-away database with the app's own tables.
"""
import hmac
import os
import secrets
from datetime import datetime, timezone

from flask import Flask, abort, redirect, render_template, request, session
from jinja2 import DictLoader
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _database_url():
    url = os.environ.get("DATABASE_URL") or "sqlite:////tmp/bench-minimal-insert.sqlite3"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Row(db.Model):
    __tablename__ = "bench_ceiling_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    organisation: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


FORM = """<!doctype html>
<html lang="nl"><head><meta charset="utf-8"><title>{{ slug }}</title></head>
<body><main><h1>Aanmelden: {{ slug }}</h1>
<form method="post" action="/e/{{ slug }}">
<input id="csrf_token" name="csrf_token" type="hidden" value="{{ token }}">
<label for="name">Naam</label><input id="name" name="name" required>
<label for="email">E-mailadres</label><input id="email" name="email" type="email" required>
<label for="organisation">Organisatie</label><input id="organisation" name="organisation">
<label for="role">Functie</label><input id="role" name="role">
<input id="consent" name="consent" type="checkbox" value="y" required><label for="consent">Akkoord</label>
<button type="submit">Aanmelden</button>
</form></main></body></html>
"""


def create_app():
    app = Flask(__name__)
    # A template Flask loads (and so compiles) once, as any app's templates folder would give;
    # render_template_string would compile the form again on every GET.
    app.jinja_loader = DictLoader({"form.html": FORM})
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        SQLALCHEMY_DATABASE_URI=_database_url(),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.environ.get("EVENTSVC_ENV") == "production",
    )
    db.init_app(app)
    with app.app_context():
        try:
            db.create_all()
        except DBAPIError:  # another gunicorn worker created it at the same moment
            pass

    @app.get("/e/<slug>")
    def form(slug):
        token = session.get("csrf") or secrets.token_urlsafe(32)
        session["csrf"] = token
        return render_template("form.html", slug=slug, token=token)

    @app.post("/e/<slug>")
    def insert(slug):
        expected, given = session.get("csrf"), request.form.get("csrf_token", "")
        if not expected or not hmac.compare_digest(expected, given):
            abort(400)
        if not request.form.get("name") or "@" not in request.form.get("email", "") \
                or request.form.get("consent") != "y":
            abort(422)
        db.session.add(Row(slug=slug, name=request.form["name"], email=request.form["email"].strip().lower(),
                           organisation=request.form.get("organisation", ""), role=request.form.get("role", ""),
                           created_at=datetime.now(timezone.utc)))
        db.session.commit()
        return redirect(f"/e/{slug}/done", 303)

    @app.get("/")
    def index():
        return "minimal insert ceiling\n"

    return app


app = create_app()
