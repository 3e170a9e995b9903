"""Scheduled cleanup: deleting the records the cleanup policies no longer keep.

Runs on the leader in its own thread, every ``cleanup_interval`` (a duration, or
``"CRON <expr>"``), counted from the last run anywhere in the cluster (``lastCleanupAt``
in the globals collection), so a change of leader does not reset the schedule. Planning
already marks records whose document was deleted (``sourceDeletedAt``) or stopped
matching (``matched: false``), and a partial index holds only those: a cleanup reads
candidates from that index in batches, never the whole tasks collection.

One kind of record planning cannot mark: with ``sourceDocumentDeletedOrNoLongerMatching``
and a filter that reads the clock (``$$NOW``), a document stops matching as time passes,
with no write to report it. For such tasks each cleanup first re-checks the filter for
the records idle past ``keep_for`` and still marked as matching (one source query per
batch), at most ``RECHECK_BATCHES`` batches per cleanup, resuming where the previous one
stopped: the cost of a cleanup stays bounded however many records a task keeps.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial
from typing import Final

from bson import ObjectId

from .._retry import call_with_retry
from .._threads import Loop
from ..clock import ServerClock
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..config.schedule import Schedule
from ..config.settings import Settings
from ..config.triggers import reads_the_clock
from ..store.globals import CleanupStateStore
from ..store.tasks import TaskStore

logger = logging.getLogger(__name__)

CLEANUP_BATCH: Final = 1000
RECHECK_BATCHES: Final = 100  # per task and cleanup: 100 000 records re-checked at most


def next_cleanup(last: dt.datetime | None, schedule: Schedule) -> dt.datetime | None:
    """When the next cleanup is due (``None``: now, it never ran)."""
    return None if last is None else schedule.next_after(last)


class Cleaner(Loop):
    """Deletes orphaned task records when the schedule says so."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        task_store: TaskStore,
        cleanup_state: CleanupStateStore,
        clock: ServerClock,
        is_leader: Callable[[], bool],
        batch_size: int = CLEANUP_BATCH,
    ) -> None:
        super().__init__(f"mongoreact-cleanup-{settings.instance_id}")
        self._settings = settings
        self._registry = registry
        self._tasks = task_store
        self._state = cleanup_state
        self._clock = clock
        self._is_leader = is_leader
        self._batch_size = batch_size
        self.deleted = 0
        # When the next cleanup is due, as last read (None: read it). Read again only
        # once it has come, not every heartbeat: only a leader cleans, and another
        # leader's cleanup meanwhile is found by that read.
        self._due: dt.datetime | None = None
        # Per task: the last record a bounded re-check of a clock-reading filter read.
        self._recheck_after: dict[str, ObjectId | None] = {}

    def step(self) -> float:
        heartbeat = self._settings.leader_heartbeat.total_seconds()
        if not self._is_leader():
            return heartbeat
        now = self._clock.now()
        if self._due is None or self._due <= now:
            last = call_with_retry(self._state.last, self.stopping, what="cleanup state")
            self._due = next_cleanup(last, self._settings.cleanup_interval)
        if self._due is not None and self._due > now:
            return min(heartbeat, (self._due - now).total_seconds())
        if self.run(now):
            call_with_retry(self._state.mark_done, self.stopping, what="cleanup state")
            self._due = None  # read back: the next is due after the server's time of this one
        return heartbeat

    def run(self, now: dt.datetime) -> bool:
        """One cleanup of every task; ``False`` if interrupted (lost the lease, stopping)."""
        for definition in self._registry:
            if definition.cleanup_policy.delete_when == "never":
                continue
            cutoff = now - definition.cleanup_policy.keep_for
            if not self._recheck_filter(definition, cutoff):
                return False
            while True:
                if self.stopping.is_set() or not self._is_leader():
                    return False
                deleted = call_with_retry(
                    partial(self._tasks.delete_orphans, definition, cutoff, self._batch_size),
                    self.stopping,
                    what=f"cleaning up {definition.name}",
                )
                self.deleted += deleted
                if deleted:
                    logger.info("%s: deleted %d orphaned record(s)", definition.name, deleted)
                if deleted < self._batch_size:
                    break
        return True

    def _recheck_filter(self, definition: TaskDefinition, cutoff: dt.datetime) -> bool:
        """Mark the records whose document stopped matching a clock-reading filter
        (see the module docstring); ``False`` if interrupted."""
        policy = definition.cleanup_policy.delete_when
        if policy != "sourceDocumentDeletedOrNoLongerMatching" or not reads_the_clock(
            definition.filter
        ):
            return True
        after = self._recheck_after.get(definition.name)
        for _ in range(RECHECK_BATCHES):
            if self.stopping.is_set() or not self._is_leader():
                return False
            marked, after = call_with_retry(
                partial(self._tasks.unmatch_by_time, definition, cutoff, after, self._batch_size),
                self.stopping,
                what=f"re-checking the filter of {definition.name}",
            )
            if marked:
                logger.info("%s: %d record(s) no longer match the filter", definition.name, marked)
            if after is None:
                break
        self._recheck_after[definition.name] = after
        return True
