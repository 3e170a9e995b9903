"""The shape every mongoreact background thread shares.

A ``Loop`` is a named daemon thread that calls ``step()`` until its stop ``Event`` is
set. ``step`` returns how long to wait before the next call; ``stop()`` and ``wake()``
cut the wait short (a wake-up that comes while ``step`` runs is kept, so the next wait
ends at once: none is lost), and ``wake_at()`` schedules wake-ups ahead (each fires,
a later one survives an earlier one firing). An exception is logged with its traceback
and the loop carries on after a growing pause: a thread never dies silently.

Every thread of the library waits this way; the one other wait is ``WorkerPool.stop``
waiting on a ``Condition`` for the records in hand to be given back, which is a
caller's wait, not a thread's.
"""

from __future__ import annotations

import abc
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from ._retry import call_with_retry, log_failure

logger = logging.getLogger(__name__)

ERROR_PAUSE_MIN: Final = 0.1
ERROR_PAUSE_MAX: Final = 10.0


class Loop(abc.ABC):
    """Base class: implement ``step``; optionally ``on_stop`` for last words."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._wakeup = threading.Event()  # set by stop() and wake()
        self.woken = False  # whether wake() (or stop()) ended the last wait early
        self._thread: threading.Thread | None = None
        self._wake_lock = threading.Lock()
        self._wake_times: list[float] = []  # scheduled wake-ups (monotonic), a heap
        self._wake_fired = False  # a scheduled wake-up came that wake_due() has not told

    @abc.abstractmethod
    def step(self) -> float:
        """Do one round of work; return seconds to wait before the next."""

    def on_stop(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Runs in the thread after the last step."""

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish; does not wait (see ``join``)."""
        self.stopping.set()
        self._wakeup.set()

    def wake(self) -> None:
        """End the current wait: ``step`` runs again now."""
        self._wakeup.set()

    def wake_at(self, when: float) -> None:
        """Have ``step`` run again by ``when`` (``time.monotonic()`` time) at the
        latest, and now."""
        with self._wake_lock:
            heapq.heappush(self._wake_times, when)
        self._wakeup.set()

    def wake_due(self) -> bool:
        """Whether a scheduled wake-up has come since the last call (each fires once;
        later ones are kept)."""
        with self._wake_lock:
            self._fire_due_locked()
            fired, self._wake_fired = self._wake_fired, False
        return fired

    def _fire_due_locked(self) -> None:
        now = time.monotonic()
        while self._wake_times and self._wake_times[0] <= now:
            heapq.heappop(self._wake_times)
            self._wake_fired = True

    def _until_scheduled(self, wait: float) -> float:
        """``wait``, cut short by the next scheduled wake-up still to come. Those that
        have come are noted for ``wake_due()`` and no longer cut anything: a step that
        does not ask (a full worker pool) must not make the loop spin."""
        with self._wake_lock:
            self._fire_due_locked()
            if not self._wake_times:
                return wait
            return min(wait, max(0.0, self._wake_times[0] - time.monotonic()))

    @property
    def is_running(self) -> bool:
        """Started, not asked to stop, and its thread alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self.stopping.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; ``True`` if it has finished."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        pause = ERROR_PAUSE_MIN
        try:
            while not self.stopping.is_set():
                self._wakeup.clear()
                try:
                    wait = self.step()
                    pause = ERROR_PAUSE_MIN
                except Exception as error:
                    log_failure(logger, error, "%s: error; retrying in %.1fs", self.name, pause)
                    wait, pause = pause, min(pause * 2, ERROR_PAUSE_MAX)
                wait = self._until_scheduled(wait)
                self.woken = wait > 0 and self._wakeup.wait(wait)
        finally:
            try:
                self.on_stop()
            except Exception:
                logger.exception("%s: error while stopping", self.name)
            logger.debug("%s: stopped", self.name)


class Renewal(Loop):
    """Renews a lease every ``interval`` seconds until stopped or lost.

    ``renew()`` returns whether the lease is still held; transient errors are retried
    (tenacity, within the interval), and other failures are logged by ``Loop`` and tried
    again at the next round. When ``renew()`` says the lease is lost, ``on_lost()`` runs
    once and the loop ends.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        renew: Callable[[], bool],
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name)
        self._interval = interval
        self._renew = renew
        self._on_lost = on_lost
        self._due = False  # the first round only waits: the lease was just taken

    def step(self) -> float:
        if self._due:
            what = f"renewing a lease ({self.name})"
            held = call_with_retry(
                self._renew, self.stopping, what=what, give_up_after=self._interval
            )
            if not held:
                self._on_lost()
                self.stop()
                return 0.0
        self._due = True
        return self._interval
