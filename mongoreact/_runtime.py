"""The running part of one mongoreact instance, built by ``ReactiveTasks.start()``.

It owns the stores and the threads, and the order they start and stop in: workers
before the election (an instance can run work before it can plan), and on stop the
workers first (no new claims, running handlers finish), then every other thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure

from ._threads import Loop
from .clock import ServerClock
from .cluster.catalogue import Catalogue
from .cluster.presence import Beacon
from .cluster.throttles import Throttles
from .config.definition import TaskDefinition
from .config.registry import TaskRegistry
from .config.settings import Settings
from .cron import CronRunner, CronTask
from .errors import ConfigError, MongoReactError
from .execution.admission import Admission, ConcurrencySlots
from .execution.leases import LeaseKeeper
from .execution.worker import WorkerPool
from .monitoring.measurements import Measurements
from .monitoring.prometheus import FigureReader, Figures, MetricsPusher
from .planning.leadership import Leadership
from .store.cron import CronStore
from .store.globals import GlobalsStore
from .store.server import hello
from .store.slots import SlotStore
from .store.tasks import TaskStore

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class Runtime:
    """Stores and threads of a started instance; ``prepare()``, ``start()``, ``stop()``."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        cron_tasks: dict[str, CronTask],
        database: Database[Document],
        clock: ServerClock,
        measurements: Measurements,
        tasks: Callable[[], dict[str, str]],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._database = database
        self._clock = clock
        self._tasks = TaskStore(database)
        globals_store = GlobalsStore(database, settings.globals_collection)
        slots = ConcurrencySlots(settings, SlotStore(database, settings.globals_collection))
        self._catalogue = Catalogue(
            registry=registry, specs=globals_store.specs, task_store=self._tasks, clock=clock
        )
        self._leases = LeaseKeeper(
            settings=settings, store=self._tasks, slots=slots, measurements=measurements
        )
        self._workers = WorkerPool(
            settings=settings,
            registry=registry,
            store=self._tasks,
            clock=clock,
            leases=self._leases,
            admission=Admission(settings, Throttles(globals_store.throttles, clock), slots),
            measurements=measurements,
        )
        self._leadership = Leadership(
            settings=settings,
            database=database,
            task_store=self._tasks,
            globals_store=globals_store,
            catalogue=self._catalogue,
            clock=clock,
            measurements=measurements,
            hello=lambda: hello(database),
            on_planned=self._planned,
        )
        self._cron = CronRunner(
            settings=settings, store=CronStore(database), tasks=cron_tasks, clock=clock
        )
        self._figures = FigureReader(
            settings=settings,
            measurements=measurements,
            clock=clock,
            task_store=self._tasks,
            globals_store=globals_store,
            tasks=tasks,
            is_leader=self.is_leader,
        )
        # Background loops besides the workers and the election, in start order.
        beacon = Beacon(
            settings=settings,
            store=globals_store.presence,
            measurements=measurements,
            is_leader=self.is_leader,
            in_hand=self._leases.held,
        )
        self._loops: list[Loop] = [self._leases, beacon]
        monitoring = settings.monitoring
        if monitoring.enabled and monitoring.scrape_mode == "cluster":
            self._loops.insert(
                0,
                MetricsPusher(
                    settings=settings, store=globals_store.metrics, measurements=measurements
                ),
            )
        if cron_tasks:
            self._loops.insert(0, self._cron)

    def prepare(self) -> None:
        """Check the deployment and every task with the server, create the indexes, sync
        the clock, publish the definitions; ``ConfigError`` or ``MongoReactError``."""
        reply = hello(self._database)
        if not reply.get("setName") and reply.get("msg") != "isdbgrid":
            raise MongoReactError(
                "mongoreact needs change streams: connect to a replica set (a single-node "
                "replica set is enough) or a sharded cluster"
            )
        for definition in self._registry:
            _validate_with_server(self._tasks, definition)
        for tasks_collection in self._registry.tasks_collections:
            self._tasks.ensure_indexes(tasks_collection)
        self._clock.sync(lambda: hello(self._database))
        self._catalogue.publish()
        if self._cron in self._loops:
            self._cron.publish()

    def start(self) -> None:
        """Start every thread."""
        for loop in self._loops:
            loop.start()
        self._workers.start()
        self._leadership.start()

    def stop(self, timeout: float) -> bool:
        """Stop every thread within ``timeout`` seconds; whether all finished cleanly
        (no handler was still running)."""
        deadline = time.monotonic() + timeout
        clean = self._workers.stop(timeout)
        for loop in self._loops:
            loop.stop()
        self._leadership.stop()
        for loop in self._loops:
            clean &= loop.join(max(0.0, deadline - time.monotonic()))
        return self._leadership.join(max(0.0, deadline - time.monotonic())) and clean

    def after_handlers(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no handler runs any more (see ``WorkerPool``)."""
        self._workers.after_handlers(callback)

    def threads(self) -> dict[str, bool]:
        """Every background thread: name -> whether it runs."""
        return {
            **{loop.name: loop.is_running for loop in self._loops},
            **self._workers.threads(),
            **self._leadership.threads(),
        }

    def is_leader(self) -> bool:
        """Whether this instance currently plans for the cluster."""
        return self._leadership.is_leader()

    def wake_workers(self) -> None:
        """Have the workers poll for due tasks now."""
        self._workers.wake()

    def wake_cron(self) -> None:
        """Have the cron runner look for due (or requested) cron tasks now."""
        self._cron.wake()

    def read_figures(self) -> Figures:
        """What a Prometheus scrape reports (see ``monitoring``)."""
        return self._figures.read()

    def _planned(self, definition: TaskDefinition) -> None:
        # The planner knows when the work it planned falls due: the workers look then.
        self._workers.wake(definition.debounce.total_seconds())


def _validate_with_server(tasks: TaskStore, definition: TaskDefinition) -> None:
    """``ConfigError`` naming the option the server rejects: the filter is parsed alone
    first, so a failure of the whole pipeline after it is the watch projection's."""
    checks: list[tuple[str, object, Callable[[TaskDefinition], None]]] = [
        ("filter", definition.filter, tasks.validate_filter),
        ("watch_projection", definition.watch_projection, tasks.validate_definition),
    ]
    for option, value, check in checks:
        try:
            check(definition)
        except OperationFailure as error:  # noqa: PERF203 - two checks, at start only
            reason = error.details.get("errmsg") if error.details else str(error)
            raise ConfigError(
                option, value,
                f"task {definition.name!r}: the server rejected the {option}: {reason}",
            ) from error  # fmt: skip
