"""Workers: a claim loop feeding a ``ThreadPoolExecutor`` of ``concurrency`` threads.

The dispatcher thread claims due tasks whenever worker threads are free - as many as
there are free threads, in one batch - and hands them over; one claimer per instance
keeps concurrent claims (and their contention on the index head) down. Polling adapts:
after an empty claim the wait doubles from ``poll_min`` up to ``poll_max``; a found task
resets it, and so does a wake-up from this instance's planner, which knows when the work
it planned is due.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import attrs

from .clock import ServerClock
from .leases import LeaseKeeper
from .metrics import Measurements
from .records import ClaimedTask, TaskInfo
from .registry import TaskRegistry
from .runner import TaskRunner
from .settings import Settings
from .store.slots import SlotStore
from .store.tasks import TaskStore
from .throttles import Throttles

logger = logging.getLogger("mongoreact.worker")

POLL_JITTER: Final = 0.1  # seconds; spreads the polls of instances started together
SLOT_WAIT: Final = 0.25
MAX_CLAIM_BATCH: Final = 32
CONTENDED_SPREAD: Final = 4
CONTENDED_CLAIMS: Final = 20


class WorkerPool:
    """Claims and runs tasks on this instance."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        store: TaskStore,
        clock: ServerClock,
        leases: LeaseKeeper,
        throttles: Throttles,
        slots: SlotStore | None = None,
        measurements: Measurements | None = None,
    ) -> None:
        self._throttles = throttles
        self._slot_store = slots
        self._settings = settings
        self._registry = registry
        self._store = store
        self._clock = clock
        self._runner = TaskRunner(
            settings=settings,
            store=store,
            clock=clock,
            leases=leases,
            throttles=throttles,
            wake=self.wake,
            slots=slots,
            measurements=measurements,
        )
        self._slots = threading.Semaphore(settings.concurrency)
        self._signal = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._wake_at: float | None = None
        self._rotation = 0
        self._contended: dict[str, int] = {}  # claims left to spread, per collection
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self.running = 0

    def start(self) -> None:
        """Start the dispatcher and the worker threads."""
        if self._settings.concurrency == 0 or self._thread is not None:
            return
        self._executor = ThreadPoolExecutor(
            self._settings.concurrency,
            thread_name_prefix=f"mongoreact-worker-{self._settings.instance_id}",
        )
        self._thread = threading.Thread(
            target=self._dispatch,
            name=f"mongoreact-dispatch-{self._settings.instance_id}",
            daemon=True,
        )
        self._thread.start()

    def wake(self, delay: float = 0.0) -> None:
        """Poll at once, or at the latest ``delay`` seconds from now."""
        at = time.monotonic() + max(0.0, delay)
        with self._lock:
            if self._wake_at is None or at < self._wake_at:
                self._wake_at = at
        self._signal.set()

    def stop(self, timeout: float) -> bool:
        """Stop claiming; wait up to ``timeout`` seconds for running handlers.

        Returns ``True`` if every handler finished. A handler still running keeps its
        thread; its task's lease expires and another instance takes the task over.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._signal.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        clean = True
        if self._executor is not None:
            # Wait for handlers by taking every slot back.
            taken = 0
            for _ in range(self._settings.concurrency):
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    clean = False
                    break
                taken += 1
            self._executor.shutdown(wait=clean)
            for _ in range(taken):
                self._slots.release()
        return clean

    # The dispatcher thread.

    def _dispatch(self) -> None:
        poll_min = self._settings.poll_min.total_seconds()
        poll_max = self._settings.poll_max.total_seconds()
        backoff = poll_min
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=SLOT_WAIT):
                continue
            self._signal.clear()
            try:
                found = self._claim_and_submit()
            except Exception:
                logger.exception("claiming a task failed; retrying in %.1fs", backoff)
                found = False
            if found:
                backoff = poll_min
                continue
            signaled = self._signal.wait(self._next_wait(backoff))
            if self._wake_due():
                backoff = poll_min
            elif not signaled:
                backoff = min(backoff * 2, poll_max)
        logger.debug("dispatcher stopped")

    def _claim_and_submit(self) -> bool:
        # One slot is held; take the other free ones too, and claim that many records in
        # one batch (two commands, whatever the batch size).
        free = 1
        while free < MAX_CLAIM_BATCH and self._slots.acquire(blocking=False):
            free += 1
        claims: list[ClaimedTask] = []
        try:
            claims = self._claim_next(free)
        finally:  # on an error too: every slot not given to a claim goes back
            for _ in range(free - len(claims)):
                self._slots.release()
        if not claims:
            return False
        assert self._executor is not None
        with self._lock:
            self.running += len(claims)
        for claim in claims:
            self._executor.submit(self._run, claim)
        return True

    def _claim_next(self, limit: int) -> list[ClaimedTask]:
        groups = list(self._registry.tasks_collections.items())
        if not groups:
            return []
        # Start with a different collection each time so one busy collection cannot
        # starve the others.
        self._rotation = (self._rotation + 1) % len(groups)
        for tasks_collection, definitions in groups[self._rotation :] + groups[: self._rotation]:
            names = [d.name for d in definitions if self._allowed(d.name, d.collection)]
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
            )
            # After a collision with another instance, spread the next claims over more
            # candidates for a while; then go back to strict overdue order.
            if batch.lost:
                self._contended[tasks_collection] = CONTENDED_CLAIMS
            elif self._contended.get(tasks_collection):
                self._contended[tasks_collection] -= 1
            claims = [c for c in map(self._take_slot, batch.claims) if c is not None]
            if claims:
                return claims
        return []

    def _take_slot(self, claim: ClaimedTask) -> ClaimedTask | None:
        """For a task with ``max_concurrency``: the claim with a cluster-wide slot, or
        ``None`` (the record is given back) when every slot is taken."""
        definition = self._registry[claim.record["task"]]
        limit = definition.max_concurrency
        if limit is None or self._slot_store is None:
            return claim
        lease = self._settings.task_lease
        if self._slot_store.acquire(definition.name, claim.claim_id, limit, lease):
            return attrs.evolve(claim, holds_slot=True)
        self._store.unclaim(claim)
        # At the limit: leave this task type alone for a moment instead of claiming and
        # giving back its records on every poll.
        self._throttles.pause(definition.name, self._settings.poll_min.total_seconds() * 2)
        return None

    def _allowed(self, task: str, collection: str) -> bool:
        if self._throttles.is_paused(task):
            return False
        task_filter = self._settings.task_filter
        if task_filter is None:
            return True
        try:
            return bool(task_filter(TaskInfo(task=task, collection=collection)))
        except Exception:
            logger.exception("task_filter raised for %s; not claiming it", task)
            return False

    def _run(self, claim: ClaimedTask) -> None:
        try:
            definition = self._registry[claim.record["task"]]
            self._runner.run(definition, claim)
        except Exception:
            logger.exception("unexpected error running task %s", claim.record.get("task"))
        finally:
            with self._lock:
                self.running -= 1
            self._slots.release()
            # A finished run frees a slot: look for more work at once.
            self._signal.set()

    def _next_wait(self, backoff: float) -> float:
        wait = backoff + random.uniform(0, POLL_JITTER)
        with self._lock:
            if self._wake_at is not None:
                wait = min(wait, max(0.0, self._wake_at - time.monotonic()))
        return wait

    def _wake_due(self) -> bool:
        with self._lock:
            if self._wake_at is not None and self._wake_at <= time.monotonic():
                self._wake_at = None
                return True
        return False
