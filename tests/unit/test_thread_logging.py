"""Background threads: transient errors are WARNINGs without tracebacks; the rest ERRORs."""

from __future__ import annotations

import logging
import threading

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

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
