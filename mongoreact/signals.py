"""Run an instance until SIGTERM or SIGINT: the one loop behind ``mongoreact run``,
Django's ``runreactive`` and ``ReactiveTasks.run_until_signalled``.

- A signal during ``start()`` (still waiting for MongoDB) cancels the start at once.
- The first signal stops the instance, letting running handlers finish for up to
  ``stop_timeout`` seconds.
- A second SIGINT (Ctrl+C) is a person who will not wait: the process exits at once.
  A repeated SIGTERM (layers of supervisors) is not a reason to abandon handlers: it is
  logged and ignored.
- The instance stopping by itself (its threads gave up) ends the wait too.

Signals can only be handled in the main thread; elsewhere (a test, a thread of a web
server) the loop runs without handlers and ends on ``stop()`` only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

logger = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 1.0  # seconds between checks that the instance still runs
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class Runnable(Protocol):
    """What the loop asks of the instance it runs (``ReactiveTasks``)."""

    @property
    def is_running(self) -> bool: ...
    def start(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> bool: ...


class StoppedBySignal:
    """What ended a run: ``signal`` (its name, or ``None`` if the instance stopped by
    itself or ``stop()`` was called) and whether the shutdown was ``clean``."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal: str | None = None
        self.clean = True


def run_until_signalled(
    instance: Runnable,
    *,
    stop_timeout: float = 30.0,
    connect_timeout: float = 30.0,
    started: Callable[[], object] | None = None,
) -> StoppedBySignal:
    """Start ``instance``, call ``started()``, wait for a signal (or the instance to
    stop by itself), stop it. Exceptions of ``start()`` propagate, except a start
    cancelled by a signal, which ends the run cleanly."""
    from .errors import StartCancelledError

    outcome = StoppedBySignal()

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if outcome.requested.is_set():
            if signum == signal.SIGINT:
                logger.warning("SIGINT again: exiting now, without waiting for handlers")
                os._exit(128 + signum)
            logger.info("%s again: already stopping", name)
            return
        outcome.signal = name
        outcome.requested.set()
        if instance.is_running:
            logger.info("%s: stopping (running handlers get up to %.0fs)", name, stop_timeout)
        else:
            logger.info("%s: cancelling the start", name)
            instance.stop(0)  # does not block: it only cancels a start in progress

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handle) for sig in _SIGNALS}
    try:
        try:
            instance.start(timeout=connect_timeout)
        except StartCancelledError:
            return outcome
        if started is not None:
            try:
                started()
            except BaseException:
                instance.stop(stop_timeout)  # never leave it running behind an error
                raise
        while not outcome.requested.wait(CHECK_INTERVAL):
            if not instance.is_running:
                logger.error("the instance stopped without a signal (stop() was called)")
                outcome.clean = False
                return outcome
        outcome.clean = instance.stop(stop_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not outcome.clean:
        logger.warning(
            "handlers were still running after %.0fs; their tasks run again", stop_timeout
        )
    return outcome
