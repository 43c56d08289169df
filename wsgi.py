"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
import gc

from eventsvc import create_app

app = create_app()

# The ~130,000 objects made while importing and building the app live as long as the
# process. Left to the collector, each of its occasional full passes walks them all:
# a pause of 70–90 ms in which every queued request waits (most of the registration
# burst's p99). Frozen, they are skipped, and a full pass walks only what requests made.
gc.collect()
gc.freeze()
