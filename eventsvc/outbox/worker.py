"""The worker loop: claim, deliver, back off when the server is down."""
import logging
import os
import signal
import socket
import time

from flask import current_app

from ..extensions import db
from ..health import beat
from .delivery import BatchResult, claim_due, deliver_batch

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, *, batch_size=None, idle_seconds=1.0, max_backoff_seconds=300):
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.batch_size = batch_size or current_app.config["OUTBOX_BATCH_SIZE"]
        self.idle_seconds = idle_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stopping = False
        self.totals = BatchResult()  # the sum of every batch so far

    def stop(self, *_):
        """SIGTERM: finish the message in hand, then leave."""
        self.stopping = True

    def run_once(self) -> BatchResult:
        """Deliver everything that is due now, then return (tests, cron)."""
        while not self.stopping:
            result = self._batch()
            if result is None or result.server_down:
                break
        return self.totals

    def run_forever(self) -> BatchResult:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff = 0.0
        while not self.stopping:
            result = self._batch()
            if result is not None and result.server_down:
                backoff = min(max(backoff * 2, 1.0), self.max_backoff_seconds)
                log.warning("mail server unavailable; the queue waits %.0f s", backoff)
                self._sleep(backoff)
                continue
            backoff = 0.0
            if result is None:
                self._sleep(self.idle_seconds)
        return self.totals

    def _batch(self):
        beat(self.id, self.totals.sent)
        ids = claim_due(self.id, limit=self.batch_size)
        if not ids:
            db.session.rollback()  # end the read transaction; keep nothing between batches
            return None
        result = deliver_batch(ids, self.id, should_stop=self._should_stop)
        db.session.rollback()
        self.totals.add(result)
        return result

    def _should_stop(self):
        beat(self.id, self.totals.sent)  # before each message: a long batch over a slow server still beats
        return self.stopping

    def _sleep(self, seconds):
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            beat(self.id, self.totals.sent)  # backing off is not dead
            time.sleep(max(0.0, min(0.2, deadline - time.monotonic())))
