"""Production safety: what must be true before this app may serve real people.

`configuration_problems(app)` lists what is wrong (for operators, in English);
`enforce_production_safety(app)` refuses to build the app in production when
anything is (called at the end of `create_app`); `flask --app wsgi check`
prints the list and exits 1 when it is not empty.

Only `EVENTSVC_ENV=production` switches the rules on, never `FLASK_DEBUG`.
With a bad production configuration `flask --app wsgi check` cannot build the
app either; the refusal is then a `click.ClickException`, so the CLI prints
the same list as "Error: ..." and exits 1 instead of showing a traceback.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import click
from flask import Flask

from config import DEFAULT_SECRET_KEY

MIN_SECRET_KEY_LENGTH = 32
DEV_MAIL_SINK_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
DEV_MAIL_SINK_PORT = 8025
_TRUE = {"1", "true", "yes", "on"}


class UnsafeConfiguration(RuntimeError, click.ClickException):
    """Raised by `enforce_production_safety`: a RuntimeError for gunicorn and
    Python, and a clean "Error: ..." with exit code 1 under the flask CLI."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        message = ("refusing to start with EVENTSVC_ENV=production:\n"
                   + "\n".join(f"  - {p}" for p in self.problems))
        RuntimeError.__init__(self, message)
        click.ClickException.__init__(self, message)

    def __str__(self):
        return self.message


def is_production(app: Flask) -> bool:
    return app.config.get("EVENTSVC_ENV") == "production"


def sqlite_allowed(app: Flask) -> bool:
    if app.config.get("ALLOW_SQLITE"):
        return True
    return os.environ.get("EVENTSVC_ALLOW_SQLITE", "").strip().lower() in _TRUE


def configuration_problems(app: Flask, *, production: bool | None = None) -> list[str]:
    """What is unsafe in this configuration for production; [] when nothing is.

    With `production=None` the rules apply only when EVENTSVC_ENV is
    "production"; pass True to judge any configuration by them.
    """
    if production is None:
        production = is_production(app)
    if not production:
        return []
    config, problems = app.config, []

    secret = config.get("SECRET_KEY") or ""
    if secret == DEFAULT_SECRET_KEY:
        problems.append("SECRET_KEY is the built-in development key; set SECRET_KEY to a random value "
                        "of at least 32 characters (python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    elif len(str(secret)) < MIN_SECRET_KEY_LENGTH:
        problems.append(f"SECRET_KEY is too short ({len(str(secret))} characters; at least "
                        f"{MIN_SECRET_KEY_LENGTH} needed)")

    database = str(config.get("SQLALCHEMY_DATABASE_URI") or "")
    if database.startswith("sqlite") and not sqlite_allowed(app):
        problems.append("the database is SQLite; set DATABASE_URL to PostgreSQL, or set "
                        "EVENTSVC_ALLOW_SQLITE=1 to run on one machine with one worker on purpose")

    server = (config.get("MAIL_SERVER") or "").strip()
    port = config.get("MAIL_PORT")
    if not server:
        problems.append("MAIL_SERVER is not set; no notice could be delivered")
    elif server in DEV_MAIL_SINK_HOSTS and _as_int(port) == DEV_MAIL_SINK_PORT:
        problems.append(f"MAIL_SERVER is the development mail sink ({server}:{port}); "
                        "set MAIL_SERVER and MAIL_PORT to your real SMTP server")

    base_url = str(config.get("BASE_URL") or "")
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        problems.append(f"BASE_URL must be the public https:// address (is {base_url!r}); "
                        "links in mails are built from it")

    if not config.get("SESSION_COOKIE_SECURE"):
        problems.append("SESSION_COOKIE_SECURE is off; session cookies would travel over plain HTTP")
    if config.get("DEBUG"):
        problems.append("debug mode is on (FLASK_DEBUG); the debugger runs code for whoever reaches it")
    return problems


def configuration_warnings(app: Flask, *, production: bool | None = None) -> list[str]:
    """Not refusals, but worth knowing before going live."""
    if production is None:
        production = is_production(app)
    if not production:
        return []
    warnings = []
    storage = str(app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if app.config.get("RATELIMIT_ENABLED", True) is False:
        warnings.append("rate limiting is off (RATELIMIT_ENABLED)")
    elif storage.startswith("memory://"):
        warnings.append("rate limits are kept in process memory (RATELIMIT_STORAGE_URI=memory://): every "
                        "gunicorn process and host counts on its own; use redis:// for a shared budget")
    return warnings


def enforce_production_safety(app: Flask) -> None:
    """Refuse to build a production app with an unsafe configuration."""
    if not is_production(app):
        return
    problems = configuration_problems(app, production=True)
    if problems:
        raise UnsafeConfiguration(problems)


def register_check_command(app: Flask) -> None:
    if "check" in app.cli.commands:
        return

    @app.cli.command("check")
    @click.option("--production", "as_production", is_flag=True,
                  help="Apply the production rules whatever EVENTSVC_ENV says.")
    def check_command(as_production):
        """Report problems in the configuration; exit 1 if there are any."""
        production = True if as_production else None
        for warning in configuration_warnings(app, production=production):
            click.echo(f"warning: {warning}")
        problems = configuration_problems(app, production=production)
        if problems:
            for problem in problems:
                click.echo(f"problem: {problem}")
            click.echo(f"{len(problems)} configuration problem(s) found")
            raise SystemExit(1)
        env = app.config.get("EVENTSVC_ENV")
        if is_production(app) or as_production:
            click.echo("configuration OK")
        else:
            click.echo(f"configuration OK (EVENTSVC_ENV={env}: production rules not applied; "
                       "add --production to apply them)")


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
