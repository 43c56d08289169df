"""Operator commands: `flask --app wsgi <command>`."""
import click

from .events.models import Event  # noqa: F401


def register_cli(app):
    @app.cli.command("demo")
    def demo_command():
        """Create the demo sessions (idempotent)."""
        from .demo import create_demo_data

        for event in create_demo_data():
            click.echo(f"{event.slug}: {app.config['BASE_URL']}/e/{event.slug}")
