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

    @app.cli.command("worker")
    @click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
    @click.option("--batch-size", type=click.IntRange(1, 1000), default=None)
    @click.option("--idle-seconds", type=float, default=1.0, help="Pause when nothing is due.")
    def worker_command(once, batch_size, idle_seconds):
        """Deliver the outbox over SMTP until stopped (SIGTERM finishes the message in hand)."""
        from .outbox.worker import Worker

        worker = Worker(batch_size=batch_size, idle_seconds=idle_seconds)
        click.echo(f"worker {worker.id}: delivering through {app.config['MAIL_SERVER']}:{app.config['MAIL_PORT']}")
        totals = worker.run_once() if once else worker.run_forever()
        click.echo(f"worker {worker.id}: sent {totals.sent}, retried {totals.retried}, "
                   f"failed {totals.failed}, skipped {totals.skipped}")
