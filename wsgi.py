"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
from eventsvc import create_app

app = create_app()
