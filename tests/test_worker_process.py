"""The worker as operators run it: `flask --app wsgi worker`, a real process."""
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from eventsvc.extensions import db
from eventsvc.outbox.models import Message

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(app, sink):
    env = dict(os.environ, EVENTSVC_ENV="testing", MAIL_SERVER="127.0.0.1", MAIL_PORT=str(sink.port),
               BASE_URL=app.config["BASE_URL"],
               DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"].replace("+psycopg", ""))
    return env


def flask(*args):
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


def test_worker_once_drains_and_exits(app, smtp, make_event, register):
    event = make_event()
    for _ in range(3):
        register(event)
    done = subprocess.run(flask("worker", "--once"), cwd=ROOT, env=worker_env(app, smtp),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sent 3" in done.stdout
    assert smtp.count == 3


def test_worker_runs_until_sigterm(app, smtp, make_event, register):
    worker = subprocess.Popen(flask("worker", "--idle-seconds", "0.2"), cwd=ROOT, env=worker_env(app, smtp),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        register(make_event())
        smtp.wait_for(1, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "sent 1" in out
    db.session.rollback()
    assert [m.status for m in db.session.scalars(select(Message).where(Message.kind == "confirmation"))] == ["sent"]
