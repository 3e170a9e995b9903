"""Handler time limits (``register(timeout=...)``): one thread watching the deadlines of
the runs under way on this instance.

A thread cannot be killed. A run past its deadline is *taken over*: the watchdog sets
``ctx.cancelled`` (a handler that checks it can stop early), finalizes the record as a
failure (``HandlerTimeoutError``; the retry policy applies) and gives its lease and
concurrency slot back; the worker pool adds a thread in place of the one still busy, so
its capacity does not shrink. When the handler returns at last, its result is discarded
(``ctx.mark_completed`` refuses with ``TaskLeaseLostError``) and the extra thread retires.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from .._threads import Loop

logger = logging.getLogger(__name__)

IDLE_WAIT: Final = 60.0  # seconds between looks when no run has a deadline
COMPACT_ABOVE: Final = 4096  # deadlines kept before dropping those of finished runs


class Deadline:
    """One run's deadline: either the handler returns first (``cancel()`` is
    ``True``) or the watchdog fires first (``cancel()`` is ``False``); exactly one of the
    two, decided under a lock."""

    def __init__(self, at: float, on_expiry: Callable[[], None]) -> None:
        self.at = at
        self._on_expiry: Callable[[], None] | None = on_expiry
        self._lock = threading.Lock()
        self._state = "armed"

    @property
    def armed(self) -> bool:
        return self._state == "armed"

    def cancel(self) -> bool:
        """The handler returned: ``True`` if it did so before the deadline fired."""
        with self._lock:
            if self._state == "armed":
                self._state = "cancelled"
                self._on_expiry = None  # the run it holds can go
            return self._state == "cancelled"

    def fire(self) -> None:
        with self._lock:
            if self._state != "armed":
                return
            self._state = "fired"
            on_expiry, self._on_expiry = self._on_expiry, None
        if on_expiry is None:
            return
        try:
            on_expiry()
        except Exception:  # the other deadlines due in this round still fire
            logger.exception("ending a run past its timeout failed")


class Watchdog(Loop):
    """Fires the ``Deadline``s of the runs it watches."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"mongoreact-watchdog-{instance_id}")
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()

    def watch(self, seconds: float, on_expiry: Callable[[], None]) -> Deadline:
        """A deadline ``seconds`` from now calling ``on_expiry()`` (on this thread)."""
        deadline = Deadline(time.monotonic() + seconds, on_expiry)
        with self._lock:
            if len(self._heap) >= COMPACT_ABOVE and len(self._heap) % COMPACT_ABOVE == 0:
                # Runs that returned in time leave their (emptied) deadlines behind
                # until due: with long timeouts and many runs, drop them now and then.
                self._heap = [entry for entry in self._heap if entry[2].armed]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            first = self._heap[0][2] is deadline
        if first:
            self.wake()
        return deadline

    def step(self) -> float:
        now = time.monotonic()
        due: list[Deadline] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[2])
            wait = self._heap[0][0] - now if self._heap else IDLE_WAIT
        for deadline in due:
            deadline.fire()  # a no-op for a run that returned in time
        return max(0.0, wait)
