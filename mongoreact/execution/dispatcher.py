"""The dispatcher: one thread per instance that claims due tasks for the worker threads.

It claims in batches (two commands, whatever the batch size) as the claim policy
allows, except right after an idle wait, when one record is most often all that is due
and a single ``findAndModify`` claims it in one, and hands the claims to the pool; one
claimer per instance keeps concurrent claims (and their contention on the index head)
down. Polling adapts: after an empty
claim the wait doubles from ``poll_min`` up to ``poll_max``; a found task resets it,
and so does a wake-up from this instance's planner, which knows when the work it
planned is due.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final

from .._retry import log_failure
from .._threads import Loop
from ..clock import ServerClock
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..config.settings import Settings
from ..config.triggers import trigger_fingerprint
from ..records import ClaimedTask
from ..store.protocols import WorkStore
from .admission import Admission
from .prefetch import SourcePrefetch

logger = logging.getLogger(__name__)

POLL_JITTER: Final = 0.1  # seconds; spreads the polls of instances started together
ROOM_WAIT: Final = 0.25  # a run finishing wakes the dispatcher sooner
CONTENDED_SPREAD: Final = 4
CONTENDED_CLAIMS: Final = 20


class Dispatcher(Loop):
    """Claims due tasks while ``room()`` says there are threads for them, and passes
    them to ``hand_over``."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        store: WorkStore,
        clock: ServerClock,
        admission: Admission,
        prefetch: SourcePrefetch,
        room: Callable[[], int],
        hand_over: Callable[[list[ClaimedTask]], None],
    ) -> None:
        super().__init__(f"mongoreact-dispatch-{settings.instance_id}")
        self._settings = settings
        self._registry = registry
        self._store = store
        self._clock = clock
        self._admission = admission
        self._prefetch = prefetch
        self._room = room
        self._hand_over = hand_over
        self._poll_min = settings.poll_min.total_seconds()
        self._poll_max = settings.poll_max.total_seconds()
        self._backoff = self._poll_min
        self._idle = False  # the last step ended in an idle wait
        self._rotation = 0
        self._contended: dict[str, int] = {}  # claims left to spread, per collection
        self._trigger_cache: dict[str, list[str] | None] = {}  # see _triggers

    def wake_in(self, delay: float) -> None:
        """Poll at once, or at the latest ``delay`` seconds from now (every scheduled
        wake-up fires: a later one survives an earlier one, or a retry or deferral
        would wait for the idle back-off)."""
        self.wake_at(time.monotonic() + max(0.0, delay))

    def step(self) -> float:
        # Woken from an idle wait (new work planned, a retry due): most often one record
        # is due, and one findAndModify claims it in one round trip where a batch claim
        # takes two. The next claim is a batch again, in case more came.
        single = False
        if self._idle:
            self._idle = False
            if self.wake_due():
                self._backoff = self._poll_min
                single = True
            elif not self.woken:
                self._backoff = min(self._backoff * 2, self._poll_max)
            else:
                single = True
        room = self._room()
        if room == 0:
            return ROOM_WAIT
        try:
            claims = self._claim_next(1 if single else room)
        except Exception as error:
            log_failure(logger, error, "claiming a task failed; retrying in %.1fs", self._backoff)
            claims = []
        if claims:
            self._hand_over(self._with_documents(claims))
            self._backoff = self._poll_min
            return 0.0
        self._idle = True
        return self._next_wait()

    def _claim_next(self, limit: int) -> list[ClaimedTask]:
        groups = list(self._registry.tasks_collections.items())
        if not groups:
            return []
        # Start with a different collection each time so one busy collection cannot
        # starve the others.
        self._rotation = (self._rotation + 1) % len(groups)
        for tasks_collection, definitions in groups[self._rotation :] + groups[: self._rotation]:
            names = [d.name for d in definitions if self._admission.allows(d.name, d.collection)]
            if not names:
                continue
            batch = self._store.claim_many(
                tasks_collection,
                names,
                now=self._clock.now(),
                instance_id=self._settings.instance_id,
                lease=self._settings.task_lease,
                limit=limit,
                spread=CONTENDED_SPREAD if self._contended.get(tasks_collection) else 1,
                triggers=self._triggers(tasks_collection, definitions),
            )
            # After a collision with another instance, spread the next claims over more
            # candidates for a while; then go back to strict overdue order.
            if batch.lost:
                self._contended[tasks_collection] = CONTENDED_CLAIMS
            elif self._contended.get(tasks_collection):
                self._contended[tasks_collection] -= 1
            if batch.claims:
                return batch.claims
        return []

    def _triggers(
        self, tasks_collection: str, definitions: list[TaskDefinition]
    ) -> list[str] | None:
        """The trigger fingerprints of this instance's definitions on a tasks collection
        (claim only what they planned), or ``None`` (claim anything) when one of them
        does not reconcile a changed trigger: its old records would never be replanned
        under the new one."""
        if tasks_collection not in self._trigger_cache:
            self._trigger_cache[tasks_collection] = (
                [trigger_fingerprint(d.filter, d.watch_expression) for d in definitions]
                if all(d.evolution.reconcile_on_trigger_change for d in definitions)
                else None
            )
        return self._trigger_cache[tasks_collection]

    def _with_documents(self, claims: list[ClaimedTask]) -> list[ClaimedTask]:
        """The claims with their source documents read in one query where that saves
        handlers their own reads; as they are if that read fails (the claims are ours
        now and must run either way)."""
        try:
            return self._prefetch.fill(claims)
        except Exception as error:
            log_failure(logger, error, "reading the claimed batch's documents failed")
            return claims

    def _next_wait(self) -> float:
        return self._backoff + random.uniform(0, POLL_JITTER)  # Loop: or a wake_at
