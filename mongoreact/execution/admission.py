"""Admission: whether this instance may run a task now.

One step asked twice: before a task type is claimed (is it throttled, does
``task_filter`` let this instance run it?) and again when a claimed record gets a thread
(it may have been throttled while it waited), where a task with ``max_concurrency``
also needs one of its cluster-wide slots. ``ConcurrencySlots`` is the one owner of those
slots: taken here, renewed with the task leases, given back when the run ends.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import attrs

from .._retry import OUTLIVES_STOP, call_with_retry, log_failure
from ..cluster.throttles import Throttles
from ..config.definition import TaskDefinition
from ..config.settings import Settings
from ..records import ClaimedTask, TaskInfo
from ..store.slots import SlotStore

logger = logging.getLogger(__name__)


class ConcurrencySlots:
    """The cluster-wide slots of tasks with ``max_concurrency``."""

    def __init__(self, settings: Settings, store: SlotStore | None) -> None:
        self._settings = settings
        self._store = store

    def take(self, definition: TaskDefinition, claim: ClaimedTask) -> ClaimedTask | None:
        """``claim`` holding a slot (or as it is, for a task without a limit); ``None``
        when every slot is taken."""
        limit = definition.max_concurrency
        if limit is None or self._store is None:
            return claim
        if self._store.acquire(definition.name, claim.claim_id, limit, self._settings.task_lease):
            return attrs.evolve(claim, holds_slot=True)
        return None

    def renew(self, held: list[ClaimedTask], stopping: threading.Event, within: float) -> None:
        """Extend the slots of ``held`` claims by a task lease (transient errors retried
        for up to ``within`` seconds)."""
        store, lease = self._store, self._settings.task_lease
        if store is None:
            return
        by_task: dict[str, list[Any]] = {}
        for claim in held:
            if claim.holds_slot:
                by_task.setdefault(claim.record["task"], []).append(claim.claim_id)
        for task, slot_ids in by_task.items():
            call_with_retry(
                functools.partial(store.renew, task, slot_ids, lease),
                stopping,
                what="renewing concurrency slots",
                give_up_after=within,
            )

    def release(self, claim: ClaimedTask) -> None:
        """Give back ``claim``'s slot, if it holds one; a slot that cannot be given back
        expires with its lease."""
        if not claim.holds_slot or self._store is None:
            return
        store = self._store
        try:
            call_with_retry(
                lambda: store.release(claim.record["task"], claim.claim_id),
                OUTLIVES_STOP,
                what="releasing a concurrency slot",
            )
        except Exception as error:
            log_failure(logger, error, "could not release a concurrency slot; it expires")


class Admission:
    """Throttles, ``task_filter`` and concurrency slots, asked as one step."""

    def __init__(self, settings: Settings, throttles: Throttles, slots: ConcurrencySlots) -> None:
        self._settings = settings
        self.throttles = throttles
        self.slots = slots

    def allows(self, task: str, collection: str) -> bool:
        """Whether this instance may claim ``task`` now (not throttled, and
        ``task_filter`` says yes; a filter that raises says no, logged)."""
        if self.throttles.is_paused(task):
            return False
        task_filter = self._settings.task_filter
        if task_filter is None:
            return True
        try:
            return bool(task_filter(TaskInfo(task=task, collection=collection)))
        except Exception:
            logger.exception("task_filter raised for %s; not claiming it", task)
            return False

    def admit(self, definition: TaskDefinition, claim: ClaimedTask) -> ClaimedTask | None:
        """``claim`` ready to run (holding its slot, if its task has a limit), or
        ``None`` when it must be given back."""
        if not self.allows(definition.name, definition.collection):
            return None
        taken = self.slots.take(definition, claim)
        if taken is None:
            # At the limit: leave this task type alone for a moment instead of claiming
            # and giving back its records on every poll.
            self.throttles.pause(definition.name, self._settings.poll_min.total_seconds() * 2)
        return taken
