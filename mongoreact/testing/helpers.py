"""Helpers for users' tests: fast settings, waiting for quiet, failing on task errors."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final

from ..cluster.clock import as_utc
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
_BUSY: Final = ACTIVE


def _busy(engine: ReactiveTasks) -> bool:
    """Whether a task runs, or is pending and already due."""
    if engine.count_tasks(status=list(_BUSY)):
        return True
    first = engine.get_tasks(status=PENDING, limit=1, sort=[("nextRunAt", 1)])
    due = first[0].get("nextRunAt") if first else None
    return due is not None and as_utc(due) <= engine.clock.now()


def wait_until_idle(engine: ReactiveTasks, timeout: float = 10.0, stable: float = 0.2) -> None:
    """Wait until no task runs or is due, continuously for ``stable`` seconds (so events
    still being batched or debounce windows about to end are waited for too); raise
    ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    pause = threading.Event()
    while True:
        now = time.monotonic()
        if _busy(engine):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= stable:
            return
        if now > deadline:
            raise AssertionError(f"mongoreact was still busy after {timeout}s")
        pause.wait(0.02)


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
