"""The development mail sink (eventsvc.devmail) and its pages. Runs without conftest."""
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from bench.procs import port_open
from eventsvc.devmail.sink import MailSink

ROOT = Path(__file__).resolve().parents[1]
SUBJECT = "Gewijzigd: Café-webinar “Samen” – 23 juni 🎉"
UID = "6f1c2a4e-8d3b-4a57-9c1e-2b7f0d9e5a11"
ICS = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//eventsvc//test//NL", "METHOD:REQUEST",
    "BEGIN:VTIMEZONE", "TZID:Europe/Amsterdam",
    "BEGIN:DAYLIGHT", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200", "TZNAME:CEST",
    "DTSTART:19700329T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "END:DAYLIGHT",
    "BEGIN:STANDARD", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "TZNAME:CET",
    "DTSTART:19701025T030000", "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "END:STANDARD",
    "END:VTIMEZONE",
    "BEGIN:VEVENT", f"UID:{UID}", "SEQUENCE:3", "STATUS:CONFIRMED", "SUMMARY:Café-webinar",
    "DTSTAMP:20210601T100000Z",
    "DTSTART;TZID=Europe/Amsterdam:20210623T124500", "DTEND;TZID=Europe/Amsterdam:20210623T140000",
    "LOCATION:https://events.example.org/r/abc/join",
    "ORGANIZER;CN=Organisatie:mailto:events@example.org",
    "ATTENDEE;CN=Jan Jansen;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:jan@example.org",
    "END:VEVENT", "END:VCALENDAR", "",
])


def invite(to="jan@example.org") -> EmailMessage:
    """The invite shape from DESIGN.md: mixed → (alternative → text, html, calendar) + invite.ics."""
    msg = EmailMessage()
    msg["From"] = "Organisatie <events@example.org>"
    msg["To"] = f"Jan Jansen <{to}>"
    msg["Reply-To"] = "contact@example.org"
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = "<msg-1@events.example.org>"
    msg.set_content("Beste Jan,\n\nDe sessie is verplaatst. Groet, café-team\n", cte="quoted-printable")
    msg.add_alternative('<p>Beste Jan, <b>verplaatst</b> "x"</p><script>alert(1)</script>', subtype="html")
    msg.add_alternative(ICS, subtype="calendar", params={"method": "REQUEST"}, cte="base64")
    msg.make_mixed()
    msg.add_attachment(ICS.encode(), maintype="application", subtype="ics", filename="invite.ics")
    return msg


@pytest.fixture
def sink(tmp_path):
    with MailSink(directory=tmp_path / "devmail") as sink:
        yield sink


def smtp(sink):
    return smtplib.SMTP(sink.host, sink.port, timeout=10)


@pytest.fixture
def client(sink, tmp_path):
    """The real app in development mode (the mailbox exists only there); no database is touched."""
    from eventsvc import create_app

    app = create_app({"EVENTSVC_ENV": "development", "DEVMAIL_DIR": str(sink.directory), "TESTING": True,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
                      "INSTANCE_DIR": str(tmp_path)})
    assert "devmail" in app.blueprints
    return app.test_client()


def test_receives_parses_and_stores(sink):
    with smtp(sink) as s:
        s.send_message(invite())
    [mail] = sink.wait_for(1)
    assert sink.count == 1
    assert mail.mail_from == "events@example.org" and mail.rcpt_tos == ["jan@example.org"]
    assert mail.message["Subject"] == SUBJECT
    assert [p.get_content_type() for p in mail.message.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/calendar", "application/ics"]
    assert UID in mail.message.get_body(("calendar",)).get_content()
    [stored] = sink.directory.glob("*.eml")
    assert stored == mail.path and stored.read_bytes() == mail.data
    assert not list(sink.directory.glob(".*"))  # no temp files left behind


def test_pages(sink, client):
    with smtp(sink) as s:
        s.send_message(invite())
    [mail] = sink.wait_for(1)
    name = mail.path.name

    index = client.get("/dev/mail/").get_data(as_text=True)
    assert "Ontvangen mails (ontwikkelomgeving)" in index
    assert SUBJECT in index and "METHOD:REQUEST" in index and f"/dev/mail/{name}" in index

    page = client.get(f"/dev/mail/{name}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for expected in (SUBJECT, "METHOD:REQUEST", UID, "CONFIRMED", "Europe/Amsterdam",
                     "DTSTART;TZID=Europe/Amsterdam:20210623T124500", "2021-06-23 10:45:00 UTC",
                     "ATTENDEE;CN=Jan Jansen;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:jan@example.org", "invite.ics", "multipart/alternative", "quoted-printable",
                     "De sessie is verplaatst", "&lt;msg-1@events.example.org&gt;"):
        assert expected in html, expected
    # The HTML body is only shown escaped, inside a sandboxed iframe.
    assert "<iframe class=\"devmail-html\" sandbox " in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)" in html

    raw = client.get(f"/dev/mail/{name}/raw")
    assert raw.status_code == 200 and raw.mimetype == "text/plain" and raw.data == mail.data


def test_empty_and_path_traversal(sink, client, tmp_path):
    assert "Geen mails ontvangen" in client.get("/dev/mail/").get_data(as_text=True)
    (tmp_path / "secret.eml").write_text("Subject: secret\n\nnope\n")
    (sink.directory / ".half-written.eml.tmp").write_text("Subject: x\n\n")
    for bad in ("..%2F..%2Fetc%2Fpasswd", "../x", "..%2Fsecret.eml", "%2E%2E%2Fsecret.eml",
                "..", ".half-written.eml.tmp", "nope.eml"):
        assert client.get(f"/dev/mail/{bad}").status_code == 404, bad
        assert client.get(f"/dev/mail/{bad}/raw").status_code == 404, bad


def test_missing_directory(tmp_path, client):
    client.application.config["DEVMAIL_DIR"] = str(tmp_path / "nothing-yet")
    assert "Geen mails ontvangen" in client.get("/dev/mail/").get_data(as_text=True)


def test_refuse_rcpt_only_that_address(sink):
    sink.refuse_rcpt["bad@example.org"] = (550, "5.1.1 No such user")
    with smtp(sink) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
            s.sendmail("events@example.org", ["Bad@Example.org"], invite("Bad@Example.org").as_bytes(policy=SMTP))
        assert err.value.recipients == {"Bad@Example.org": (550, b"5.1.1 No such user")}
        s.rset()
        refused = s.sendmail("events@example.org", ["bad@example.org", "jan@example.org"], invite().as_bytes(policy=SMTP))
    assert refused == {"bad@example.org": (550, b"5.1.1 No such user")}
    [mail] = sink.wait_for(1)
    assert mail.rcpt_tos == ["jan@example.org"]


def test_fail_next_data_once(sink):
    sink.fail_next_data.append((451, "4.3.0 Try again later"))
    with smtp(sink) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.send_message(invite())
        assert (err.value.smtp_code, err.value.smtp_error) == (451, b"4.3.0 Try again later")
        s.send_message(invite())
    assert len(sink.wait_for(1)) == 1 and sink.count == 1 and sink.fail_next_data == []


def test_wait_for_times_out(sink):
    with pytest.raises(TimeoutError, match="expected 1 mail"):
        sink.wait_for(1, timeout=0.2)


def test_count_without_keeping_and_clear(tmp_path):
    with MailSink(keep_in_memory=False) as sink, smtp(sink) as s:
        for _ in range(3):
            s.send_message(invite())
        assert sink.wait_for(3) == [] and sink.count == 3
        sink.clear()
        assert sink.count == 0


@pytest.mark.slow
def test_command_line(tmp_path):
    command = [sys.executable, "-m", "eventsvc.devmail.sink", "--port", "0", "--dir", str(tmp_path / "mail")]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert "listening on 127.0.0.1:" in line
            port = int(line.split("127.0.0.1:")[1].split(",")[0])
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.send_message(invite())
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "stopped after 1 mail" in proc.stdout.read()
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_make_run_stops_its_web_server_and_worker_on_sigterm(tmp_path):
    """`make run` (eventsvc.devserver) ended by `kill`, `timeout` or a container stop takes its children along."""
    import os
    import time

    if port_open(5000) or port_open(8025):
        pytest.skip("ports 5000 and 8025, which `make run` uses, are taken")
    env = dict(os.environ, EVENTSVC_ENV="development", EVENTSVC_INSTANCE_DIR=str(tmp_path),
               DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite3'}")
    for name in ("FLASK_DEBUG", "FLASK_APP", "FLASK_RUN_PORT"):
        env.pop(name, None)
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    log = (tmp_path / "devserver.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "eventsvc.devserver"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_open(5000) and len(_children(server.pid)) == 2):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "devserver.log").read_text()
            time.sleep(0.2)
        children = _children(server.pid)  # the web server and the outbox worker
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], "left running after SIGTERM"
        assert not port_open(5000) and not port_open(8025)
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # whatever is left of the session, if the test failed
        except ProcessLookupError:
            pass
        log.close()
