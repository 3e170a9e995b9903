"""Leadership: the election, and what this instance runs while it leads (the stream
reader, the planner and the cleaner).

The leader's threads start when the lease is won, are retired when it is lost, and
restart when the definitions the cluster publishes change (the leader plans every
published task). Retired threads stop on their own: each checks its stop event before
every write, so the election's thread never waits for them.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pymongo.database import Database

from .._threads import Loop
from ..clock import ServerClock
from ..cluster.catalogue import Catalogue
from ..cluster.leader import LeaderElector
from ..cluster.specs import planning_signature
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..store.globals import GlobalsStore
from ..store.tasks import TaskStore
from .cleanup import Cleaner
from .planner import Planner, StreamReader

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class PlanningThreads(NamedTuple):
    """The leader's threads, started in leader ``epoch``."""

    reader: StreamReader
    planner: Planner
    cleaner: Cleaner
    epoch: int

    @property
    def loops(self) -> tuple[StreamReader, Planner, Cleaner]:
        """The threads themselves."""
        return self.reader, self.planner, self.cleaner

    @property
    def is_running(self) -> bool:
        """Whether every one of them still runs."""
        return all(loop.is_running for loop in self.loops)


class Leadership:
    """The leader election and the leader's threads: start, restart, retire."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Database[Document],
        task_store: TaskStore,
        globals_store: GlobalsStore,
        catalogue: Catalogue,
        clock: ServerClock,
        measurements: Measurements,
        hello: Callable[[], Document],
        on_planned: Callable[[TaskDefinition], None],
    ) -> None:
        self._settings = settings
        self._database = database
        self._tasks = task_store
        self._globals = globals_store
        self._catalogue = catalogue
        self._clock = clock
        self._measurements = measurements
        self._on_planned = on_planned
        self._current: PlanningThreads | None = None  # while leading
        self._retired: list[Loop] = []
        self._signature: tuple[Any, ...] = ()
        self._elector = LeaderElector(
            settings=settings,
            store=globals_store,
            clock=clock,
            hello=hello,
            on_elected=self._on_elected,
            on_heartbeat=self._on_heartbeat,
            on_deposed=self._retire,
            measurements=measurements,
        )

    def start(self) -> None:
        """Start taking part in the election."""
        self._elector.start()

    def stop(self) -> None:
        """Leave the election (giving the lease up) and retire the leader's threads."""
        self._elector.stop()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every thread; whether all finished."""
        deadline = time.monotonic() + timeout
        clean = self._elector.join(timeout)
        self._retire()
        for loop in list(self._retired):
            if loop.join(max(0.0, deadline - time.monotonic())):
                self._retired.remove(loop)
            else:
                logger.warning("%s did not stop within %.1fs", loop.name, timeout)
        return clean and not self._retired

    def threads(self) -> dict[str, bool]:
        """The election's thread and, while leading, the leader's: name -> running."""
        loops: list[Loop] = [self._elector, *(self._current.loops if self._current else ())]
        return {loop.name: loop.is_running for loop in loops}

    def is_leader(self) -> bool:
        """Whether this instance currently plans for the cluster."""
        return self._elector.is_leader()

    def _on_elected(self) -> None:
        current = self._current
        if current is not None and current.is_running and current.epoch == self._elector.epoch:
            # The same term, renewed after a local lapse: the planner paused and keeps
            # its batches (restarting it would throw planned work away).
            return
        self._start(self._catalogue.planning_registry())

    def _on_heartbeat(self, leading: bool) -> None:
        """Every election round: keep our definitions fresh; while leading, make sure
        planning runs, with every definition the cluster publishes now."""
        self._catalogue.keep_fresh()
        if not leading:
            return
        current = self._current
        if current is None or not current.is_running:
            # The lease is ours, so a planner must run: never hold the lease and plan
            # nothing. (A planner stops itself when it sees the lease lapse locally.)
            if self._elector.refence():
                return  # a new term, with its own planner (or no longer leading)
            # Planning threads stop while their lease holds only when a fenced write
            # was refused with no later epoch written: the planner's state went back
            # under this term (a checkpoint of a generation the restored state never
            # reached). Every task is reconciled from a new generation, which also
            # drops this term's checkpoints, so the new planner is not refused again.
            logger.warning(
                "this instance holds the lease but its planner had stopped; reconciling "
                "every task and restarting it"
            )
            self._globals.reconciliation.reset(epoch=self._elector.epoch)
            self._start(self._catalogue.planning_registry())
            return
        registry = self._catalogue.planning_registry()
        if planning_signature(list(registry)) != self._signature:
            logger.info("the published task definitions changed; restarting planning")
            self._start(registry)

    def _retire(self) -> None:
        """Stop planning at once; the threads finish in the background."""
        current, self._current = self._current, None
        if current is not None:
            for loop in current.loops:
                loop.stop()
            self._retired.extend(current.loops)

    def _reconcile_everything(self, epoch: int) -> bool:
        """Reconcile every task from the beginning: the stream's history is gone, or a
        watched collection's contents were replaced by a rename or dropped. ``False``
        when a later leader owns the planner's state (the caller is deposed).

        Runs in the stream reader of ``epoch``, before its position passes what it found
        (it has logged why)."""
        if not self._globals.reconciliation.reset(epoch=epoch):
            return False
        logger.info("reconciling every task from the beginning")
        current = self._current
        if current is not None and current.epoch == epoch:
            current.planner.request_reconciliation()
        return True

    def _start(self, registry: TaskRegistry) -> None:
        settings, elector = self._settings, self._elector
        self._signature = planning_signature(list(registry))
        events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * settings.batch_size)
        reader = StreamReader(
            settings=settings,
            database=self._database,
            registry=registry,
            globals_store=self._globals,
            events=events,
            reconcile_everything=self._reconcile_everything,
            measurements=self._measurements,
            epoch=elector.epoch,
        )
        planner = Planner(
            settings=settings,
            registry=registry,
            task_store=self._tasks,
            globals_store=self._globals,
            events=events,
            stream_open=reader.opened,
            is_leader=elector.is_leader,
            on_planned=self._on_planned,
            measurements=self._measurements,
            epoch=elector.epoch,
        )
        cleaner = Cleaner(
            settings=settings,
            registry=registry,
            task_store=self._tasks,
            cleanup_state=self._globals.cleanup,
            clock=self._clock,
            is_leader=elector.is_leader,
        )
        self._retire()
        self._retired = [loop for loop in self._retired if not loop.join(0)]
        self._current = PlanningThreads(reader, planner, cleaner, elector.epoch)
        for loop in self._current.loops:
            loop.start()
