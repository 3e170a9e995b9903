"""The worker pool: ``concurrency`` threads running the tasks the dispatcher claims.

The pool keeps the account of records in hand (claimed and not yet finalized or given
back): the claim policy sizes claims by it, and ``stop()`` waits for it to reach zero.
Records claimed and not started when the pool stops are given back at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._pool import DaemonThreadPool
from .._retry import call_with_retry, log_failure
from ..clock import ServerClock
from ..config.registry import TaskRegistry
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..records import ClaimedTask
from ..store.protocols import WorkStore
from .admission import Admission
from .claim_policy import ClaimPolicy, average_run_time
from .dispatcher import Dispatcher
from .finalizer import Finalizer
from .leases import LeaseKeeper
from .prefetch import SourcePrefetch
from .runner import TaskRunner
from .watchdog import Watchdog

logger = logging.getLogger(__name__)


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
        self._leases = leases
        self._policy = ClaimPolicy(settings.concurrency, settings.prefetch)
        self._finalizer = Finalizer(store, settings.instance_id)
        prefetch = SourcePrefetch(registry, store)
        self._dispatcher = Dispatcher(
            settings=settings,
            registry=registry,
            store=store,
            clock=clock,
            admission=admission,
            prefetch=prefetch,
            room=self._room,
            hand_over=self._hand_over,
        )
        # The pool's one stop event: set when the dispatcher is asked to stop.
        self._stopping = self._dispatcher.stopping
        self._watchdog = Watchdog(settings.instance_id)
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
            on_read=prefetch.note_read,
            watchdog=self._watchdog,
            on_abandoned=self._abandoned,
        )
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self._executor: DaemonThreadPool | None = None
        self._on_idle: list[Callable[[], None]] = []  # after stop, once no handler runs
        # Claimed and not started, by claim id.
        self._waiting: dict[Any, tuple[Future[None], ClaimedTask]] = {}
        self._in_hand = 0  # claimed and not yet finalized or given back
        self._run_time: float | None = None  # moving average, seconds
        self.running = 0
        # Threads still running a handler past its timeout (replaced meanwhile).
        self.hung = 0

    def start(self) -> None:
        """Start the dispatcher, the worker threads and the finalizer."""
        if self._settings.concurrency == 0 or self._executor is not None:
            return
        self._executor = DaemonThreadPool(
            self._settings.concurrency, f"mongoreact-worker-{self._settings.instance_id}"
        )
        self._finalizer.start()
        self._watchdog.start()
        self._dispatcher.start()

    def wake(self, delay: float = 0.0) -> None:
        """Poll at once, or at the latest ``delay`` seconds from now."""
        self._dispatcher.wake_in(delay)

    def stop(self, timeout: float) -> bool:
        """Stop claiming; give back records not started; wait up to ``timeout`` seconds
        for running handlers and their results to be written.

        Returns ``True`` if every handler finished. A handler still running keeps its
        thread (a daemon: it does not hold the process's exit up); its result is
        discarded, and its task runs again elsewhere once the lease expires.
        """
        deadline = time.monotonic() + timeout
        self._dispatcher.stop()
        if self._executor is None:
            return True
        self._dispatcher.join(max(0.0, deadline - time.monotonic()))
        self._give_back_waiting()
        with self._returned:
            clean = self._returned.wait_for(
                lambda: self._in_hand == 0, max(0.0, deadline - time.monotonic())
            )
        with self._lock:
            # A handler past its timeout holds no record but still runs: not clean.
            clean = clean and self.hung == 0
        self._executor.shutdown(wait=clean, timeout=max(0.0, deadline - time.monotonic()))
        self._watchdog.stop()
        self._finalizer.stop()
        return self._finalizer.join(max(0.0, deadline - time.monotonic())) and clean

    def threads(self) -> dict[str, bool]:
        """This pool's background threads (once started): name -> whether it runs."""
        if self._executor is None:
            return {}
        loops = (self._dispatcher, self._finalizer, self._watchdog)
        return {loop.name: loop.is_running for loop in loops}

    def after_handlers(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no handler runs any more (at once if none does); for
        resources a handler abandoned by ``stop()`` may still use, such as the client."""
        with self._lock:
            if self.running or self.hung:
                self._on_idle.append(callback)
                return
        callback()

    # The dispatcher's side.

    def _room(self) -> int:
        with self._lock:
            return self._policy.room(
                in_hand=self._in_hand,
                busy=self.running + len(self._waiting),
                run_time=self._run_time,
            )

    def _hand_over(self, claims: list[ClaimedTask]) -> None:
        assert self._executor is not None  # the dispatcher runs only after start()
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
        self._dispatcher.wake()  # room to claim again

    # Worker threads.

    def _abandoned(self) -> None:
        """A handler ran past its timeout (the watchdog's thread): its thread no longer
        counts as running, and a new one takes its place, up to ``concurrency`` hung
        ones; beyond that capacity shrinks, said at ERROR."""
        assert self._executor is not None
        with self._lock:
            self.running -= 1
            self.hung += 1
            replace = self.hung <= self._settings.concurrency
        if replace:
            self._executor.grow()
        else:
            logger.error(
                "%d handlers are still running past their timeouts; no thread replaces "
                "this one, so this instance runs fewer tasks at once until they return",
                self.hung,
            )
        self._dispatcher.wake()

    def _run(self, claim: ClaimedTask) -> None:
        with self._lock:
            self._waiting.pop(claim.claim_id, None)
            self.running += 1
        started = time.monotonic()
        ran = taken_over = False
        try:
            ran, taken_over = self._start(claim)
        except Exception:
            logger.exception("unexpected error running task %s", claim.record.get("task"))
        finally:
            seconds = time.monotonic() - started
            with self._lock:
                if taken_over:  # counted out by _abandoned; its replacement stays
                    replaced = self.hung <= self._settings.concurrency
                    self.hung -= 1
                    if replaced and self._executor is not None:
                        self._executor.retire_one()
                else:
                    self.running -= 1
                if ran and not taken_over:
                    self._run_time = average_run_time(self._run_time, seconds)
                callbacks: list[Callable[[], None]] = []
                if self._stopping.is_set() and self.running == 0 and self.hung == 0:
                    callbacks, self._on_idle = self._on_idle, []
            for callback in callbacks:
                callback()
            # A finished run frees a thread: look for more work at once.
            self._dispatcher.wake()

    def _start(self, claim: ClaimedTask) -> tuple[bool, bool]:
        """Run ``claim`` unless it was lost or its task held back while it waited;
        whether it ran, and whether the watchdog took the run over."""
        try:
            definition = self._registry[claim.record["task"]]
            if self._leases.is_lost(claim):  # another instance has the record now
                self._leases.release(claim)
                self._returned_hand(1)
                return False, False
            taken = None if self._stopping.is_set() else self._admission.admit(definition, claim)
        except Exception:
            logger.exception("could not start task %s; giving it back", claim.record.get("task"))
            taken = None
        if taken is None:
            self._give_back([claim])
            return False, False
        taken_over = self._runner.run(definition, taken, lambda outcome: self._returned_hand(1))
        return True, taken_over
