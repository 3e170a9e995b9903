"""Helpers for users' tests: fast settings, waiting for quiet, failing on task errors."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from bson import Timestamp

from ..clock import as_utc
from ..records import ACTIVE, FAILED, PENDING

if TYPE_CHECKING:
    from ..reactive_tasks import ReactiveTasks

# Timings for tests: fast elections, polls and batches (production waits seconds).
FAST_SETTINGS: Final[dict[str, Any]] = {
    "poll_min": 20,
    "poll_max": 200,
    "batch_window": 10,
    "batch_max_wait": 50,
    "leader_heartbeat": 200,
    "leader_ttl": 1000,
}


def _busy(engine: ReactiveTasks, horizon: dt.datetime) -> bool:
    """Whether a task runs, or is pending and due before ``horizon``."""
    if engine.count_tasks(status=list(ACTIVE)):
        return True
    first = engine.get_tasks(status=PENDING, limit=1, sort=[("nextRunAt", 1)])
    due = first[0].get("nextRunAt") if first else None
    return due is not None and as_utc(due) <= horizon


def wait_until_idle(engine: ReactiveTasks, timeout: float = 10.0, stable: float = 0.2) -> None:
    """Wait until every write made before the call has been planned, and then until no
    task runs or is due before the timeout, continuously for ``stable`` seconds; raise
    ``AssertionError`` after ``timeout`` seconds.

    "Planned" is judged by cluster times, not by quiet: the leader must have planned
    past the last write the server had applied when this was called, so a record that
    does not exist *yet* cannot make it return early. Runs due later than the timeout
    (a retry in an hour) are not waited for. A leader confirms it has caught up at least
    every ``leader_heartbeat``: use ``FAST_SETTINGS`` in tests.
    """
    deadline = time.monotonic() + timeout
    horizon = engine.clock.now() + dt.timedelta(seconds=timeout)
    written = engine.last_write_time()
    pause = threading.Event()
    while not _planned_past(engine, written):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"mongoreact had not planned the writes made before the call after {timeout}s "
                "(is an instance running and leading?)"
            )
        pause.wait(0.02)
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if _busy(engine, horizon):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= stable:
            return
        if now > deadline:
            raise AssertionError(f"mongoreact was still busy after {timeout}s")
        pause.wait(0.02)


def _planned_past(engine: ReactiveTasks, written: Timestamp) -> bool:
    planned = engine.planned_through()
    # A position *at* the write's time may be the position of a change stream that has
    # not delivered it yet (a high-water mark): only a later one proves it was planned.
    return planned is not None and planned > written


def assert_no_task_errors(engine: ReactiveTasks, task: str | None = None) -> None:
    """Fail with every task record that failed or holds an error."""
    failing = [
        record
        for record in engine.get_tasks(task=task, limit=1000)
        if record.get("status") == FAILED or record.get("lastError")
    ]
    if failing:
        lines = [
            f"- {r['task']} {r['sourceDocId']!r} [{r['status']}]: {r.get('lastError')}"
            for r in failing
        ]
        raise AssertionError("task errors:\n" + "\n".join(lines))
