"""Operator commands: `flask --app wsgi <command>`. Same services as the web pages."""
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import click
from flask.cli import AppGroup
from sqlalchemy import select

from .errors import ServiceError
from .events.models import Event
from .extensions import db

organiser_cli = AppGroup("organiser", help="Organiser accounts.")
event_cli = AppGroup("event", help="Events: list, reschedule, cancel.")
registrations_cli = AppGroup("registrations", help="Registrations: export.")
token_cli = AppGroup("token", help="API tokens for organisers.")


def _event(slug: str) -> Event:
    event = db.session.scalar(select(Event).where(Event.slug == slug))
    if event is None:
        raise click.ClickException(f"no event with slug {slug!r}")
    return event


def _local(value: str, zone: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date and time like 2021-06-23T12:45")
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).astimezone(ZoneInfo("UTC"))


def _refused(error: ServiceError):
    raise click.ClickException(str(error.message))


@organiser_cli.command("create")
@click.argument("email")
@click.option("--name", required=True)
@click.option("--password", default=None, help="Leave out to be asked (or, without a terminal, to generate one).")
def organiser_create(email, name, password):
    """Create an organiser who can log in at /inloggen."""
    from .auth.services import create_organiser

    if password is None and sys.stdin.isatty():
        password = click.prompt("Password (empty: generate one)", hide_input=True, confirmation_prompt=True,
                                default="", show_default=False) or None
    try:
        organiser, password_used = create_organiser(email, name, password)
    except ServiceError as error:
        _refused(error)
    click.echo(f"organiser {organiser.email} created")
    if password is None:
        click.echo(f"password: {password_used}")


@event_cli.command("list")
def event_list():
    """Every event with its state and counts."""
    from .admin.queries import events_with_counts

    for event, counts in events_with_counts():
        click.echo(f"{event.slug}\t{event.status}\t{event.starts_at.astimezone(event.tz):%Y-%m-%d %H:%M}"
                   f"\tconfirmed={counts.get('confirmed', 0)}\twaitlisted={counts.get('waitlisted', 0)}"
                   f"\tcapacity={event.capacity if event.capacity is not None else '-'}")


@event_cli.command("reschedule")
@click.argument("slug")
@click.option("--start", required=True, help="New start in the event's time zone, e.g. 2021-06-23T12:45")
@click.option("--end", required=True, help="New end, e.g. 2021-06-23T14:00")
@click.option("--reason", required=True)
def event_reschedule(slug, start, end, reason):
    """Move an event and notify every registrant."""
    from .events.management import reschedule_event

    event = _event(slug)
    try:
        told = reschedule_event(event, starts_at=_local(start, event.timezone), ends_at=_local(end, event.timezone),
                                reason=reason)
    except ServiceError as error:
        _refused(error)
    click.echo(f"{slug} rescheduled; {told} notices queued")


@event_cli.command("cancel")
@click.argument("slug")
@click.option("--reason", required=True)
def event_cancel(slug, reason):
    """Cancel an event and notify every registrant."""
    from .events.management import cancel_event

    try:
        told = cancel_event(_event(slug), reason=reason)
    except ServiceError as error:
        _refused(error)
    click.echo(f"{slug} cancelled; {told} notices queued")


@registrations_cli.command("export")
@click.argument("slug")
def registrations_export(slug):
    """Write the registrations of an event as CSV to standard output."""
    from .registrations.export import registrations_csv

    click.echo(registrations_csv(_event(slug)), nl=False)


@token_cli.command("create")
@click.argument("email")
@click.option("--name", required=True, help="What the token is for, e.g. 'CRM koppeling'.")
def token_create(email, name):
    """Create an API token for an organiser; it is shown once."""
    from .auth.models import Organiser
    from .auth.tokens import create_api_token

    organiser = db.session.scalar(select(Organiser).where(Organiser.email == email.strip().lower()))
    if organiser is None:
        raise click.ClickException(f"no organiser {email}")
    try:
        _, token = create_api_token(organiser, name)
    except ServiceError as error:
        _refused(error)
    click.echo(token)


@token_cli.command("revoke")
@click.argument("prefix")
def token_revoke(prefix):
    """Revoke the token that starts with PREFIX (as shown in the workspace)."""
    from .auth.models import ApiToken
    from .auth.tokens import revoke_api_token

    tokens = db.session.scalars(select(ApiToken).where(ApiToken.prefix == prefix[:10],
                                                       ApiToken.revoked_at.is_(None))).all()
    if len(tokens) != 1:
        raise click.ClickException("no single active token with that prefix")
    revoke_api_token(tokens[0])
    click.echo("revoked")


def register_cli(app):
    for group in (organiser_cli, event_cli, registrations_cli, token_cli):
        app.cli.add_command(group)

    @app.cli.command("demo")
    def demo_command():
        """Create the demo sessions and a demo organiser (idempotent)."""
        from .demo import create_demo_data, create_demo_organiser

        for event in create_demo_data():
            click.echo(f"{event.slug}: {app.config['BASE_URL']}/e/{event.slug}")
        email, password = create_demo_organiser()
        click.echo(f"organiser login: {app.config['BASE_URL']}/inloggen  {email} / {password}")

    @app.cli.command("purge")
    @click.option("--after-days", type=click.IntRange(0, 36500), default=None,
                  help="Anonymise registrations of events that ended this many days ago (default: the setting).")
    def purge_command(after_days):
        """Anonymise the personal data of past events, keeping the counts."""
        from .registrations.privacy import purge_ended

        days = app.config["PURGE_AFTER_DAYS"] if after_days is None else after_days
        click.echo(f"anonymised {purge_ended(after_days=days)} registrations of events that ended over {days} days ago")

    @app.cli.command("worker")
    @click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
    @click.option("--batch-size", type=click.IntRange(1, 1000), default=None)
    @click.option("--idle-seconds", type=float, default=1.0, help="Pause when nothing is due.")
    def worker_command(once, batch_size, idle_seconds):
        """Deliver the outbox over SMTP until stopped (SIGTERM finishes the message in hand)."""
        from .outbox.worker import Worker

        worker = Worker(batch_size=batch_size, idle_seconds=idle_seconds)
        click.echo(f"worker {worker.id}: delivering through {app.config['MAIL_SERVER']}:{app.config['MAIL_PORT']}")
        if not once:
            from .observability import start_worker_metrics_server

            port = start_worker_metrics_server(app)
            if port:
                click.echo(f"worker {worker.id}: metrics on port {port}")
        totals = worker.run_once() if once else worker.run_forever()
        click.echo(f"worker {worker.id}: sent {totals.sent}, retried {totals.retried}, "
                   f"failed {totals.failed}, skipped {totals.skipped}")
