"""Background threads: transient errors are WARNINGs without tracebacks; the rest ERRORs."""

from __future__ import annotations

import logging
import threading

import pytest
from pymongo.errors import AutoReconnect, OperationFailure, WTimeoutError

from mongoreact._retry import call_with_retry
from mongoreact._threads import Loop


class _Failing(Loop):
    def __init__(self, errors: list[Exception]) -> None:
        super().__init__("failing")
        self.errors = errors
        self.done = threading.Event()

    def step(self) -> float:
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()
        self.stop()
        return 0.0


def test_transient_errors_are_warnings_and_others_errors_with_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Connection errors from the leader and lease threads were logged at ERROR with full
    # tracebacks: noise that hides what a human must look at.
    loop = _Failing([AutoReconnect("connection reset"), OperationFailure("bad", code=2)])
    with caplog.at_level(logging.WARNING, logger="mongoreact"):
        loop.start()
        assert loop.done.wait(5)
        assert loop.join(5)
    transient, other = (r for r in caplog.records if r.name == "mongoreact._threads")
    assert transient.levelno == logging.WARNING and transient.exc_info is None
    assert "connection reset" in transient.getMessage()
    assert other.levelno == logging.ERROR and other.exc_info is not None


def test_a_majority_write_timeout_is_retried_and_named_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica set that cannot replicate to a majority (a member down) used to block
    every library write with no error and no log; now the wait is bounded (wtimeout),
    the write is retried and the cause is logged for a human."""
    replies: list[object] = [WTimeoutError("waiting for replication timed out", 64), "ok"]

    def write() -> object:
        reply = replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    with caplog.at_level(logging.WARNING, logger="mongoreact"):
        assert call_with_retry(write, threading.Event(), what="saving") == "ok"
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "majority" in record.getMessage()
