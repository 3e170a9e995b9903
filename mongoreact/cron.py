"""Cron tasks: ``cron_task(name, schedule, handler)``, run once per schedule in the cluster.

Any instance that registers a cron task may run it: the one that claims the due task
first holds its lease (renewed while the handler runs) and the others skip it, so no
leader is involved. The schedule is ``"CRON <expr>"`` (croniter; a sixth field is
seconds), an interval (a duration: the next run is that long after the previous one
*ended*), or a callable ``schedule(now) -> datetime | duration``. The last five runs are
kept in ``runLog`` (newest first). A changed schedule applies at once, not after the
next run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from collections.abc import Callable
from typing import Final

import attrs
from bson import ObjectId
from pymongo.errors import PyMongoError

from ._retry import OUTLIVES_STOP, call_with_retry
from ._threads import Loop, Renewal
from .clock import ServerClock
from .config._validate import as_handler
from .config.schedule import Schedule
from .config.settings import Settings
from .errors import ConfigError
from .store.cron import CronStore

logger = logging.getLogger(__name__)

CRON_LEASE: Final = dt.timedelta(minutes=5)


@attrs.frozen(kw_only=True)
class CronTask:
    """A registered cron task."""

    name: str
    schedule: Schedule
    handler: Callable[[], object]

    @property
    def description(self) -> str:
        """How the schedule reads in the database and the dashboard."""
        return self.schedule.description

    def next_run(self, after: dt.datetime) -> dt.datetime:
        """The next run after ``after`` (aware UTC)."""
        return self.schedule.next_after(after)


def build_cron_task(name: object, schedule: object, handler: object) -> CronTask:
    """A ``CronTask`` from ``cron_task``'s arguments, or ``ConfigError``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name", name, "expected a non-empty string")
    checked: Callable[[], object] = as_handler(handler, "handler", ())
    parsed = Schedule.parse(schedule, "schedule", functions=True)
    return CronTask(name=name, schedule=parsed, handler=checked)


class CronRunner(Loop):
    """Claims and runs this instance's due cron tasks, one at a time."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: CronStore,
        tasks: dict[str, CronTask],
        clock: ServerClock,
    ) -> None:
        super().__init__(f"mongoreact-cron-{settings.instance_id}")
        self._settings = settings
        self._store = store
        self._tasks = tasks
        self._clock = clock

    def publish(self) -> None:
        """Create each task's document; a changed schedule is due again at once."""
        now = self._clock.now()
        for task in self._tasks.values():
            self._store.publish(task.name, task.description, task.next_run(now))

    def step(self) -> float:
        claimed = self._claim()
        if claimed is not None:
            self._execute(*claimed)
            return 0.0
        poll_max = self._settings.poll_max.total_seconds()
        due = self._store.next_due(list(self._tasks))
        if due is None:
            # No document for any of them: the collection was dropped (or the database).
            logger.warning("the cron task documents are missing; creating them again")
            self.publish()
            return 0.0
        wait = (due - self._clock.now()).total_seconds()
        # A due time already past means another instance runs that task: look again
        # after poll_min, not at once (that would spin on the database).
        return min(max(wait, self._settings.poll_min.total_seconds()), poll_max)

    def _claim(self) -> tuple[CronTask, ObjectId] | None:
        claimed = self._store.claim(list(self._tasks), self._settings.instance_id, CRON_LEASE)
        if claimed is None:
            return None
        name, lock_id = claimed
        return self._tasks[name], lock_id

    def _execute(self, task: CronTask, lock_id: ObjectId) -> None:
        renewal = Renewal(
            f"mongoreact-cron-lease-{task.name}",
            CRON_LEASE.total_seconds() / 5,
            lambda: self._store.renew(task.name, lock_id, CRON_LEASE),
            on_lost=lambda: logger.warning(
                "cron task %s ran past its lease, which another instance took", task.name
            ),
        )
        renewal.start()
        error = None
        started = time.monotonic()
        try:
            try:
                task.handler()
            except Exception as failure:
                error = "".join(traceback.format_exception_only(type(failure), failure)).strip()
                logger.exception("cron task %s failed", task.name)
            logger.info("cron task %s ran in %.2fs", task.name, time.monotonic() - started)
            self._finish(task, lock_id, error)
        finally:
            # Renewed until the finish is written: a finish slowed down or retried past
            # the lease would otherwise let another instance run the task again.
            renewal.stop()
            renewal.join()

    def _finish(self, task: CronTask, lock_id: ObjectId, error: str | None) -> None:
        """Record the run; retried on transient errors (even while stopping: the run
        happened), as an unrecorded run is run again once its lease expires."""
        next_run = task.next_run(self._clock.now())
        try:
            call_with_retry(
                lambda: self._store.finish(task.name, lock_id, next_run, error),
                OUTLIVES_STOP,
                what=f"finishing cron task {task.name}",
                give_up_after=CRON_LEASE.total_seconds() / 2,
            )
        except PyMongoError as failure:
            logger.error(
                "cron task %s ran but its run could not be recorded (%s); it runs again "
                "when its lease expires",
                task.name, failure,
            )  # fmt: skip
