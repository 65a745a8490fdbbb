"""The services' one work queue (agent and controller), after client-go's util/workqueue.

- a key is queued at most once however often it is added (a burst of events is one reconcile);
- a key a worker holds is never handed to a second worker; added meanwhile, it runs again once done;
- ``add_after`` queues later (a deadline, a look-again), ``retry`` queues later with a per-key
  exponential backoff that ``forget`` resets after a success.
Written here rather than taken from a library: no maintained Python package offers these semantics
(queue.Queue has none of them, and kopf's per-object queues live inside its own runtime).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable


class KeyQueue:
    """A work queue that holds each key at most once and never hands one key to two workers at a time."""

    def __init__(self, base_delay: float = 0.2, max_delay: float = 5.0) -> None:
        self.base_delay, self.max_delay = base_delay, max_delay
        self._cond = threading.Condition()
        self._order: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._cond:
            if self._closed or key in self._queued:
                return
            if key in self._processing:
                self._dirty.add(key)  # picked up again when the current run is done
                return
            self._queued.add(key)
            self._order.append(key)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (now held by the caller until ``done``), or None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._order or self._closed, timeout):
                return None
            if self._closed:
                return None
            key = self._order.popleft()
            self._queued.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._closed:
                self._dirty.discard(key)
                self._queued.add(key)
                self._order.append(key)
                self._cond.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Add the key once ``seconds`` have passed."""
        timer = threading.Timer(seconds, self.add, (key,))
        timer.daemon = True
        timer.start()

    def retry(self, key: Hashable) -> float:
        """Add the key again after base_delay * 2^(failures-1), at most max_delay; returns the delay."""
        with self._cond:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(self.base_delay * 2 ** (failures - 1), self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        """The key's work succeeded: its next failure starts the backoff from the beginning."""
        with self._cond:
            self._failures.pop(key, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._order)
