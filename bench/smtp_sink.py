"""A counting SMTP sink (aiosmtpd) for the fan-out benchmark, run as its own process.

    python -m bench.smtp_sink --port 8025 --stats /tmp/sink.json [--sample /tmp/first.eml]

Accepts everything on 127.0.0.1, keeps nothing but counts: messages, bytes,
the Message-ID of each (so duplicates are counted: a Message-ID seen twice is
one duplicate), and the wall-clock time of the first and the last accepted
message. The counts are written as JSON to `--stats` every 0.2 s while they
change, and once more on SIGTERM/SIGINT. `--sample` keeps the first message
as received, to check its shape (the personal invite) and size.

Both the app's workers and the smtplib ceiling deliver to this same sink, so
its own cost is in both sides of the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)[ \t]*$", re.I | re.M)
_WELL_FORMED = re.compile(rb"^<[^<>@\s]+@[^<>@\s]+>$")  # RFC 5322 msg-id, roughly


def message_id(data: bytes) -> bytes | None:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    head = re.sub(rb"\r?\n[ \t]+", b" ", head)  # unfold
    match = _MESSAGE_ID.search(head)
    return match.group(1).strip() if match else None


class Stats:
    def __init__(self, sample: Path | None):
        self.lock = threading.Lock()
        self.count = 0
        self.bytes = 0
        self.ids: Counter = Counter()
        self.recipients: Counter = Counter()
        self.without_id = 0
        self.malformed_ids = 0
        self.malformed_example = None
        self.first = self.last = None
        self.sample = sample
        self.version = 0

    def add(self, data: bytes, recipients: list[str]) -> None:
        now = time.time()
        mid = message_id(data)
        with self.lock:
            if self.count == 0 and self.sample is not None:
                self.sample.write_bytes(data)
            self.count += 1
            self.bytes += len(data)
            if mid is None:
                self.without_id += 1
            else:
                self.ids[mid] += 1
                if not _WELL_FORMED.match(mid):
                    self.malformed_ids += 1
                    self.malformed_example = self.malformed_example or mid.decode("ascii", "replace")
            for rcpt in recipients:
                self.recipients[rcpt.lower()] += 1
            self.first = self.first or now
            self.last = now
            self.version += 1

    def snapshot(self) -> dict:
        with self.lock:
            unique = len(self.ids)
            return {"count": self.count, "bytes": self.bytes, "unique_message_ids": unique,
                    "duplicates": sum(self.ids.values()) - unique, "without_message_id": self.without_id,
                    "malformed_message_ids": self.malformed_ids, "malformed_example": self.malformed_example,
                    "recipients": len(self.recipients),
                    "duplicate_recipients": sum(self.recipients.values()) - len(self.recipients),
                    "first": self.first, "last": self.last,
                    "mean_size": round(self.bytes / self.count) if self.count else None,
                    "pid": os.getpid()}


class Handler:
    def __init__(self, stats: Stats):
        self.stats = stats

    async def handle_DATA(self, server, session, envelope):
        self.stats.add(envelope.original_content or envelope.content, list(envelope.rcpt_tos))
        return "250 OK: counted"


def write_stats(path: Path, stats: Stats) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats.snapshot()))
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Counting SMTP sink for benchmarks.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", required=True, help="JSON file the counts are written to")
    parser.add_argument("--sample", help="file for the first message received")
    parser.add_argument("--max-seconds", type=float, default=3600, help="exit after this long regardless")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stats = Stats(Path(args.sample) if args.sample else None)
    stats_path = Path(args.stats)
    controller = Controller(Handler(stats), hostname="127.0.0.1", port=args.port,
                            data_size_limit=100 * 1024 * 1024, enable_SMTPUTF8=True, decode_data=False)
    controller.start()
    try:
        write_stats(stats_path, stats)
        deadline = time.monotonic() + args.max_seconds
        seen = 0
        while not stop.wait(0.2) and time.monotonic() < deadline:
            if stats.version != seen:
                seen = stats.version
                write_stats(stats_path, stats)
    finally:
        controller.stop()
        write_stats(stats_path, stats)


if __name__ == "__main__":
    main()
