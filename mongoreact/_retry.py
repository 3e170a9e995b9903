"""Retrying pymongo's transient errors in background threads (tenacity >= 8.2).

A network blip, a primary step-down or a NotWritablePrimary reply must not kill a
thread or lose work: the call is retried with jittered exponential back-off. Waits go
through the thread's stop ``Event`` so ``stop()`` is never held up by a back-off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import tenacity
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError, WTimeoutError

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Never set: the stop event of work that must outlive stop() (finalizing a run that
# happened, releasing a concurrency slot that would otherwise block the cluster).
OUTLIVES_STOP: Final = threading.Event()

# Server codes meaning "try again, possibly on the new primary".
_TRANSIENT_CODES: Final = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying unchanged."""
    if isinstance(error, (ConnectionFailure, WTimeoutError)):
        # AutoReconnect and NotPrimaryError are ConnectionFailures. A write whose majority
        # acknowledgement timed out was applied on the primary; every library write is
        # safe to send again.
        return True
    if isinstance(error, PyMongoError) and (
        error.has_error_label("RetryableWriteError")
        or error.has_error_label("TransientTransactionError")
    ):
        return True
    return isinstance(error, OperationFailure) and error.code in _TRANSIENT_CODES


def log_failure(log: logging.Logger, error: BaseException, message: str, *args: object) -> None:
    """Log an error a background thread will retry: a transient one (network, election)
    as a WARNING without a traceback, anything else as an ERROR with it."""
    if is_transient(error):
        log.warning("%s: %s", message % args, error)
    else:
        log.error(message, *args, exc_info=error)


def call_with_retry(
    fn: Callable[[], T], stop: threading.Event, *, what: str, give_up_after: float = 30.0
) -> T:
    """``fn()``, retried on transient errors for up to ``give_up_after`` seconds or until
    ``stop`` is set; the last error is re-raised."""

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        # wait_random_exponential(multiplier=, max=) means the same in tenacity 8.2 and 9.x.
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
        stop=tenacity.stop_any(tenacity.stop_after_delay(give_up_after), _StopWhenSet(stop)),
        sleep=sleep,
        reraise=True,
        before_sleep=lambda state: _log_retry(
            what, state.outcome.exception() if state.outcome else None
        ),
    )
    return retrying(fn)


def _log_retry(what: str, error: BaseException | None) -> None:
    if isinstance(error, WTimeoutError):
        # Not a blip: the replica set cannot replicate to a majority (a member down or
        # lagging far behind). Planning and runs are held up until an operator acts.
        logger.error(
            "during %s: a majority of the replica set did not acknowledge a write in time "
            "(is a data-bearing member down?); retrying: %s",
            what, error,
        )  # fmt: skip
        return
    logger.warning("transient error during %s, retrying: %s", what, error)


class _StopWhenSet(tenacity.stop.stop_base):
    """Stop retrying once the owning thread is asked to stop."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._event.is_set()
