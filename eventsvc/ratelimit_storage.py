"""The `memory://` rate-limit storage, expiring old counters in passing instead of on a thread.

limits' MemoryStorage starts a timer thread 10 ms after a hit (a new thread each
time the previous one has finished), and that thread walks every counter the
process holds. The limits here keep a counter per client address for up to an
hour, so during a burst of registrations from thousands of addresses every form
post paid for a new thread and a walk over thousands of counters: 0.65 ms of CPU
per post with 300 addresses, 5.4 ms with 10,000 (two limits, posts 12 ms apart).

Here nothing changes in what is counted or when a counter expires: reading or
hitting a counter still drops it once it has expired (limits does that itself),
and the walk that drops the counters nobody asks for again runs inside a hit, at
most once every SWEEP_SECONDS. Importing this module makes it the storage for
`memory://` (limits keeps one class per scheme).
"""
import time
from threading import Lock

from limits.storage import MemoryStorage

SWEEP_SECONDS = 30.0


class SweptMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = ["memory"]

    def __init__(self, *args, **kwargs):
        self._sweep_lock = Lock()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        super().__init__(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        del state["_sweep_lock"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._sweep_lock = Lock()

    # limits calls this (a name-mangled private method) after every hit to start its timer thread.
    def _MemoryStorage__schedule_expiry(self) -> None:
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
            self.sweep()
        finally:
            self._sweep_lock.release()

    def sweep(self) -> None:
        """Drop every expired counter and moving-window entry."""
        now = time.time()
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)
        for key, entries in list(self.events.items()):  # the moving-window strategy's entries
            live = [entry for entry in entries if entry.expiry > now]
            if live:
                self.events[key] = live
            else:
                self.events.pop(key, None)
                if key not in self.storage:
                    self.locks.pop(key, None)
