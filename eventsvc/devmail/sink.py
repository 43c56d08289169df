"""A local SMTP sink for development, tests and benchmarks.

    with MailSink(directory=tmp_path) as sink:
        ...send to 127.0.0.1:sink.port...
        [mail] = sink.wait_for(1)

Run in the foreground:  python -m eventsvc.devmail.sink --port 8025 --dir instance/devmail
"""
from __future__ import annotations

import argparse
import email
import email.policy
import os
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from aiosmtpd.controller import Controller

DATA_SIZE_LIMIT = 100 * 1024 * 1024  # 100 MiB: a sink should not be the thing that refuses


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    path: Path | None = None  # the stored .eml, when the sink has a directory

    @cached_property
    def message(self) -> email.message.EmailMessage:
        return parse(self.data)


def parse(data: bytes) -> email.message.EmailMessage:
    """Parse raw bytes as received over SMTP (CRLF line ends) into an EmailMessage."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)


class _Controller(Controller):
    """aiosmtpd's Controller, taught to bind port 0 and report the port it got."""

    def _create_server(self):
        return self._bind(super()._create_server())

    async def _bind(self, create_server):
        server = await create_server
        self.port = server.sockets[0].getsockname()[1]
        return server


class _Handler:
    def __init__(self, sink: MailSink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refused = self.sink.refuse_rcpt.get(address.lower())
        if refused:
            return "%d %s" % refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.sink._lock:
            reply = self.sink.fail_next_data.pop(0) if self.sink.fail_next_data else None
        if reply:
            return "%d %s" % reply
        self.sink._accept(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK: message accepted"


class MailSink:
    """An aiosmtpd server on 127.0.0.1 that keeps what it receives."""

    def __init__(self, host="127.0.0.1", port=0, directory: str | os.PathLike | None = None,
                 keep_in_memory=True):
        self.host, self.port = host, port
        self.directory = Path(directory) if directory is not None else None
        self.keep_in_memory = keep_in_memory
        self.messages: list[ReceivedMail] = []
        self.refuse_rcpt: dict[str, tuple[int, str]] = {}
        self.fail_next_data: list[tuple[int, str]] = []
        self._count = 0
        self._serial = 0  # never reset, so file names stay unique after clear()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._controller: _Controller | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> MailSink:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = _Controller(
            _Handler(self), hostname=self.host, port=self.port,
            data_size_limit=DATA_SIZE_LIMIT, enable_SMTPUTF8=True, decode_data=False,  # 8BITMIME
        )
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what arrived ------------------------------------------------------
    @property
    def count(self) -> int:
        """Mails accepted since start (or since clear()), also when keep_in_memory=False."""
        return self._count

    def wait_for(self, n: int, timeout: float = 10) -> list[ReceivedMail]:
        """Block until at least n mails were accepted; return the kept ones."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._count >= n, timeout):
                got = [f"{m.message['Subject']!r} to {', '.join(m.rcpt_tos)}" for m in self.messages]
                raise TimeoutError(
                    f"MailSink on {self.host}:{self.port} expected {n} mail(s) within {timeout}s "
                    f"but accepted {self._count}" + (": " + "; ".join(got) if got else "")
                    + (f" (refusing RCPT for {sorted(self.refuse_rcpt)})" if self.refuse_rcpt else "")
                    + (f" ({len(self.fail_next_data)} DATA failure(s) still queued)" if self.fail_next_data else "")
                )
            return list(self.messages)

    def clear(self) -> None:
        """Forget the kept mails and reset count (stored files stay)."""
        with self._lock:
            self.messages.clear()
            self._count = 0

    def _accept(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._serial += 1
            serial = self._serial
        if self.directory is not None:
            stamp = mail.received_at.strftime("%Y%m%dT%H%M%S.%fZ")
            mail.path = self.directory / f"{stamp}-{serial:06d}.eml"
            tmp = self.directory / f".{mail.path.name}.{os.getpid()}.tmp"
            tmp.write_bytes(mail.data)
            os.replace(tmp, mail.path)
        with self._arrived:
            if self.keep_in_memory:
                self.messages.append(mail)
            self._count += 1
            self._arrived.notify_all()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Local SMTP sink that stores mail as .eml files.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="instance/devmail", help="where to store received mail")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with MailSink(args.host, args.port, args.dir, keep_in_memory=False) as sink:
        print(f"devmail: SMTP sink listening on {sink.host}:{sink.port}, storing mail in {args.dir}",
              flush=True)
        while not stop.wait(1):
            pass
        print(f"devmail: stopped after {sink.count} mail(s)", flush=True)


if __name__ == "__main__":
    main()
