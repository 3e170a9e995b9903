"""Workers: a claim loop feeding a ``ThreadPoolExecutor`` of ``concurrency`` threads.

The dispatcher thread claims due tasks in batches (two commands, whatever the batch
size) and hands them to the worker threads; one claimer per instance keeps concurrent
claims (and their contention on the index head) down. Polling adapts: after an empty
claim the wait doubles from ``poll_min`` up to ``poll_max``; a found task resets it,
and so does a wake-up from this instance's planner, which knows when the work it
planned is due.

Prefetch: while handlers are short, the dispatcher claims up to ``prefetch`` records
more than it has free threads, so a claim serves many runs instead of one or two. How
far ahead it claims follows the measured run time: a record claimed ahead should get a
thread within ``PREFETCH_HORIZON``. With long handlers nothing is claimed ahead, and
idle instances are never kept from work another instance holds. Records claimed and
not started when the pool stops are given back at once.
"""

from __future__ import annotations

import functools
import heapq
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

from ._pool import DaemonThreadPool
from ._retry import call_with_retry, log_failure
from .admission import Admission
from .clock import ServerClock
from .finalizer import Finalizer
from .leases import LeaseKeeper
from .measurements import Measurements
from .records import ClaimedTask
from .registry import TaskRegistry
from .runner import TaskRunner
from .settings import Settings
from .store.protocols import WorkStore

logger = logging.getLogger(__name__)

POLL_JITTER: Final = 0.1  # seconds; spreads the polls of instances started together
ROOM_WAIT: Final = 0.25
MAX_CLAIM_BATCH: Final = 32
CONTENDED_SPREAD: Final = 4
CONTENDED_CLAIMS: Final = 20
PREFETCH_HORIZON: Final = 0.2  # seconds a record claimed ahead should wait for a thread
RUN_TIME_WEIGHT: Final = 0.2  # of the newest run in the moving average of run times


class WorkerPool:
    """Claims and runs tasks on this instance."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        store: WorkStore,
        clock: ServerClock,
        leases: LeaseKeeper,
        admission: Admission,
        measurements: Measurements | None = None,
    ) -> None:
        self._admission = admission
        self._settings = settings
        self._registry = registry
        self._store = store
        self._clock = clock
        self._leases = leases
        self._finalizer = Finalizer(store, settings.instance_id)
        self._runner = TaskRunner(
            settings=settings,
            store=store,
            clock=clock,
            leases=leases,
            throttles=admission.throttles,
            wake=self.wake,
            finalizer=self._finalizer,
            slots=admission.slots,
            measurements=measurements,
        )
        self._signal = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        # Every scheduled wake-up (monotonic times, a heap): a later one must survive an
        # earlier one firing, or a retry or deferral waits for the idle back-off.
        self._wake_times: list[float] = []
        self._rotation = 0
        self._contended: dict[str, int] = {}  # claims left to spread, per collection
        self._executor: DaemonThreadPool | None = None
        self._on_idle: list[Callable[[], None]] = []  # after stop, once no handler runs
        self._thread: threading.Thread | None = None
        # Claimed and not started, by claim id.
        self._waiting: dict[Any, tuple[Future[None], ClaimedTask]] = {}
        self._in_hand = 0  # claimed and not yet finalized or given back
        self._run_time: float | None = None  # moving average, seconds
        self.running = 0

    def start(self) -> None:
        """Start the dispatcher, the worker threads and the finalizer."""
        if self._settings.concurrency == 0 or self._thread is not None:
            return
        self._executor = DaemonThreadPool(
            self._settings.concurrency, f"mongoreact-worker-{self._settings.instance_id}"
        )
        self._finalizer.start()
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
            heapq.heappush(self._wake_times, at)
        self._signal.set()

    def stop(self, timeout: float) -> bool:
        """Stop claiming; give back records not started; wait up to ``timeout`` seconds
        for running handlers and their results to be written.

        Returns ``True`` if every handler finished. A handler still running keeps its
        thread (a daemon: it does not hold the process's exit up); its result is
        discarded, and its task runs again elsewhere once the lease expires.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._signal.set()
        if self._thread is None:
            return True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._give_back_waiting()
        with self._returned:
            clean = self._returned.wait_for(
                lambda: self._in_hand == 0, max(0.0, deadline - time.monotonic())
            )
        assert self._executor is not None
        self._executor.shutdown(wait=clean, timeout=max(0.0, deadline - time.monotonic()))
        self._finalizer.stop()
        return self._finalizer.join(max(0.0, deadline - time.monotonic())) and clean

    def after_handlers(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no handler runs any more (at once if none does); for
        resources a handler abandoned by ``stop()`` may still use, such as the client."""
        with self._lock:
            if self.running:
                self._on_idle.append(callback)
                return
        callback()

    # The dispatcher thread.

    def _dispatch(self) -> None:
        poll_min = self._settings.poll_min.total_seconds()
        poll_max = self._settings.poll_max.total_seconds()
        backoff = poll_min
        while not self._stopping.is_set():
            self._signal.clear()
            room = self._room()
            if room == 0:
                self._signal.wait(ROOM_WAIT)  # a run finishing signals
                continue
            try:
                found = self._claim_and_submit(room)
            except Exception as error:
                log_failure(logger, error, "claiming a task failed; retrying in %.1fs", backoff)
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

    def _room(self) -> int:
        """How many records to claim now: 0 until a thread is idle with nothing waiting
        for it, or enough has been finished to refill half of the records in hand (a
        claim then serves many runs)."""
        concurrency = self._settings.concurrency
        with self._lock:
            ahead = self._ahead()
            room = min(MAX_CLAIM_BATCH, concurrency + ahead - self._in_hand)
            idle = self.running + len(self._waiting) < concurrency
        if room <= 0:
            return 0
        return room if idle or room >= max(1, (concurrency + ahead) // 2) else 0

    def _ahead(self) -> int:
        """Records to claim beyond the threads: as many as the threads get through in
        ``PREFETCH_HORIZON`` at the measured run time, at most ``prefetch``."""
        if self._run_time is None or self._settings.prefetch == 0:
            return 0
        fit = self._settings.concurrency * PREFETCH_HORIZON / max(self._run_time, 1e-4)
        return min(self._settings.prefetch, int(fit))

    def _claim_and_submit(self, limit: int) -> bool:
        claims = self._claim_next(limit)
        if not claims:
            return False
        assert self._executor is not None
        refused: list[ClaimedTask] = []
        with self._lock:
            self._in_hand += len(claims)
            for claim in claims:
                self._leases.hold(claim)  # renewed while it waits for a thread
                try:
                    future = self._executor.submit(functools.partial(self._run, claim))
                except RuntimeError:  # shut down by a stop() that gave up waiting for us
                    refused.append(claim)
                    continue
                self._waiting[claim.claim_id] = (future, claim)
        self._give_back(refused)
        return True

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

    def _give_back_waiting(self) -> None:
        """Give back the records claimed that no thread has started."""
        with self._lock:
            waiting = [claim for future, claim in self._waiting.values() if future.cancel()]
            for claim in waiting:
                del self._waiting[claim.claim_id]
        self._give_back(waiting)

    def _give_back(self, claims: list[ClaimedTask]) -> None:
        if not claims:
            return
        for claim in claims:
            self._leases.release(claim)
        try:
            call_with_retry(
                lambda: self._store.unclaim_many(claims), self._stopping,
                what="giving back claimed tasks", give_up_after=5.0,
            )  # fmt: skip
        except Exception as error:
            log_failure(
                logger, error,
                "could not give back %d claimed task(s); they run when their leases expire",
                len(claims),
            )  # fmt: skip
        self._returned_hand(len(claims))

    def _returned_hand(self, count: int) -> None:
        with self._returned:
            self._in_hand -= count
            self._returned.notify_all()
        self._signal.set()  # room to claim again

    # Worker threads.

    def _run(self, claim: ClaimedTask) -> None:
        with self._lock:
            self._waiting.pop(claim.claim_id, None)
            self.running += 1
        started = time.monotonic()
        ran = False
        try:
            ran = self._start(claim)
        except Exception:
            logger.exception("unexpected error running task %s", claim.record.get("task"))
        finally:
            seconds = time.monotonic() - started
            with self._lock:
                self.running -= 1
                if ran:
                    weight = RUN_TIME_WEIGHT if self._run_time is not None else 1.0
                    self._run_time = (1 - weight) * (self._run_time or 0.0) + weight * seconds
                callbacks: list[Callable[[], None]] = []
                if self._stopping.is_set() and self.running == 0:
                    callbacks, self._on_idle = self._on_idle, []
            for callback in callbacks:
                callback()
            # A finished run frees a thread: look for more work at once.
            self._signal.set()

    def _start(self, claim: ClaimedTask) -> bool:
        """Run ``claim`` unless it was lost or its task held back while it waited;
        whether it ran."""
        try:
            definition = self._registry[claim.record["task"]]
            if self._leases.is_lost(claim):  # another instance has the record now
                self._leases.release(claim)
                self._returned_hand(1)
                return False
            taken = None if self._stopping.is_set() else self._admission.admit(definition, claim)
        except Exception:
            logger.exception("could not start task %s; giving it back", claim.record.get("task"))
            taken = None
        if taken is None:
            self._give_back([claim])
            return False
        self._runner.run(definition, taken, lambda outcome: self._returned_hand(1))
        return True

    def _next_wait(self, backoff: float) -> float:
        wait = backoff + random.uniform(0, POLL_JITTER)
        with self._lock:
            if self._wake_times:
                wait = min(wait, max(0.0, self._wake_times[0] - time.monotonic()))
        return wait

    def _wake_due(self) -> bool:
        """Whether a scheduled wake-up has come (each fires once; later ones are kept)."""
        now = time.monotonic()
        due = False
        with self._lock:
            while self._wake_times and self._wake_times[0] <= now:
                heapq.heappop(self._wake_times)
                due = True
        return due
