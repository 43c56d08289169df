"""`make run`: the web app, an outbox worker and a local mailbox, together.

Development only. The SMTP sink keeps every mail under instance/devmail, and
http://127.0.0.1:5000/dev/mail/ shows them. Ctrl-C stops all three, and so
does SIGTERM (`kill`, `timeout`, a container stop), which would otherwise end
this process alone and leave the web server and the worker running.
"""
import os
import signal
import subprocess
import sys

from config import config_for
from eventsvc.devmail.sink import MailSink


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, _interrupt)  # subprocess.run then kills the web server, finally the rest
    config = config_for("development")
    os.environ.setdefault("EVENTSVC_ENV", "development")
    sink = MailSink(port=config.MAIL_PORT, directory=config.DEVMAIL_DIR, keep_in_memory=False).start()
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    worker = subprocess.Popen([*flask, "worker"])
    print(f" * Mailbox: {config.BASE_URL}/dev/mail/ (SMTP on 127.0.0.1:{sink.port})", flush=True)
    try:
        subprocess.run([*flask, "run", "--host", "127.0.0.1", "--port", "5000"], check=False)
    except KeyboardInterrupt:
        pass
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        sink.stop()


if __name__ == "__main__":
    main()
