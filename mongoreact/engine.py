"""``ReactiveTasks``: one mongoreact instance, the class behind the module-level API."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeVar

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from ._threads import Loop
from .cleanup import Cleaner
from .clock import ServerClock, as_utc
from .cron import (
    CronRunner,
    CronTask,
    build_cron_task,
    finished_since,
    request_run,
)
from .dashboard.app import DashboardApp
from .definition import Handler, TaskDefinition, build_definition
from .errors import ConfigError, MongoReactError, NotStartedError
from .leader import LeaderElector
from .leases import LeaseKeeper
from .locks import Lock
from .management import RetryResult, TaskManager, TaskQuery, parse_sort
from .measurements import Measurements
from .monitoring import MetricsPusher, build_registry, cluster_measurements, stale_before
from .options import InitOptions, TaskOptions, Unpack
from .planner import Planner, StreamReader
from .records import TaskQueue
from .registry import TaskRegistry
from .settings import Settings, build_settings
from .specs import definition_from_spec, planning_signature, spec_of
from .store.cron import CronStore
from .store.globals import GlobalsStore
from .store.server import hello
from .store.slots import SlotStore
from .store.tasks import TaskStore
from .throttles import Throttles
from .transactions import with_transaction
from .worker import WorkerPool

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

Document = dict[str, Any]
State = Literal["new", "running", "stopped"]
T = TypeVar("T")

_READ_PREFERENCES: Final = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}

# A published task nobody has registered for this long is no longer planned.
SPEC_TTL: Final = dt.timedelta(days=7)
SPEC_TOUCH_INTERVAL: Final = 60.0  # seconds


class ReactiveTasks:
    """One mongoreact instance: its tasks, its leader election, planner and workers.

    Several instances may live in one process; each behaves like a separate app
    instance (its own ``instance_id``, threads and leases). Takes the options of
    :func:`mongoreact.init`; bad options raise ``ConfigError`` here, not later.
    """

    def __init__(self, **options: Unpack[InitOptions]) -> None:
        self._settings: Settings = build_settings(options)
        self._registry = TaskRegistry()
        self._state: State = "new"
        self._lock = threading.RLock()
        self._cron_tasks: dict[str, CronTask] = {}
        self._cron_runner: CronRunner | None = None
        self._client: MongoClient[Document] | None = None
        self._elector: LeaderElector | None = None
        self._leases: LeaseKeeper | None = None
        self._workers: WorkerPool | None = None
        self._planning: _Planning | None = None
        self._retired: list[Loop] = []
        self._planning_signature: tuple[Any, ...] = ()
        self._specs_touched = 0.0
        self._task_store: TaskStore | None = None
        self._globals: GlobalsStore | None = None
        self._database: Database[Document] | None = None
        self.clock = ServerClock()
        self.measurements = Measurements()
        self._pusher: MetricsPusher | None = None
        self._registry_cache: Any = None

    # Registration.

    def register(
        self,
        task: str | None = None,
        collection: str | None = None,
        handler: Handler | None = None,
        **options: Unpack[TaskOptions],
    ) -> TaskDefinition:
        """Register a task (see the task options in the docs); before ``start()``."""
        definition = build_definition(
            {"task": task, "collection": collection, "handler": handler, **options}
        )
        with self._lock:
            if self._state != "new":
                raise ConfigError(
                    "task",
                    definition.name,
                    "register every task before start(); registering on a running "
                    "instance is not supported",
                )
            self._registry.add(definition)
        return definition

    def task(
        self, task: str | None = None, collection: str | None = None, **options: Unpack[TaskOptions]
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`: ``@reactive.task(task=..., collection=...)``.

        Validation happens when the decorator is applied; the function is returned
        unchanged.
        """

        def decorate(handler: Handler) -> Handler:
            self.register(
                task=task or getattr(handler, "__name__", None),
                collection=collection,
                handler=handler,
                **options,
            )
            return handler

        return decorate

    def cron_task(self, name: str, schedule: object, handler: Callable[[], object]) -> CronTask:
        """Register a cron task: ``handler()`` runs once per ``schedule`` across the
        cluster (``"CRON <expr>"``, an interval, or ``schedule(now) -> datetime``)."""
        cron = build_cron_task(name, schedule, handler)
        with self._lock:
            if self._state != "new":
                raise ConfigError("name", name, "register cron tasks before start()")
            if cron.name in self._cron_tasks:
                raise ConfigError("name", name, "a cron task with this name already exists")
            self._cron_tasks[cron.name] = cron
        return cron

    def run_cron_task(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Run cron task ``name`` now on whichever instance claims it first; with
        ``wait``, return once that run has finished (``TimeoutError`` after ``timeout``)."""
        database = self._db()
        requested = request_run(database, name)
        if self._cron_runner is not None:
            self._cron_runner.wake.set()
        if not wait:
            return
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while not finished_since(database, name, requested):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cron task {name!r} did not finish within {timeout}s")
            pause.wait(0.05)

    def cron_tasks(self) -> list[dict[str, Any]]:
        """Every cron task's schedule, lease and recent runs (any instance's)."""
        return CronStore(self._db()).all()

    @property
    def definitions(self) -> list[TaskDefinition]:
        """The registered tasks."""
        return list(self._registry)

    @property
    def settings(self) -> Settings:
        """The options this instance was built with."""
        return self._settings

    @property
    def database(self) -> Database[Document]:
        """The database the tasks live in (connecting if needed); its ``client`` starts
        the sessions handlers pass to ``get_document(session=...)``."""
        return self._db()

    @property
    def instance_id(self) -> str:
        """This instance's id (leases and records name it)."""
        return self._settings.instance_id

    # Life cycle.

    def start(self) -> None:
        """Connect, create indexes, check every task with the server, start the threads.

        Non-blocking: planning and work happen on background threads. Idempotent.
        """
        with self._lock:
            if self._state == "running":
                return
            if self._state == "stopped":
                raise MongoReactError("a stopped ReactiveTasks cannot be started again")
            if not len(self._registry) and not self._cron_tasks:
                raise ConfigError("register", None, "register at least one task before start()")
            database = self._connect()
            try:
                self._prepare(database)
            except Exception:
                self._disconnect()
                raise
            self._launch(database)
            self._state = "running"
        logger.info(
            "mongoreact instance %s started with %d task(s)",
            self.instance_id,
            len(self._registry),
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop planning and claiming, wait up to ``timeout`` seconds for running
        handlers, give up the leader lease. Returns ``True`` if shutdown was clean (no
        handler was still running). Safe to call more than once."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                self._disconnect()  # a client opened for the management API
                return True
            self._state = "stopped"
        clean = True
        if self._workers is not None:
            clean = self._workers.stop(timeout)
        loops = [
            x
            for x in (self._cron_runner, self._elector, self._leases, self._pusher)
            if x is not None
        ]
        for loop in loops:
            loop.stop()
        for loop in loops:
            clean &= loop.join(max(0.0, deadline - time.monotonic()))
        self._retire_planning()
        clean &= self._join_retired(max(0.0, deadline - time.monotonic()))
        if self._workers is not None:
            # A handler still running may still use the client: close it after that.
            self._workers.after_handlers(self._disconnect)
        else:
            self._disconnect()
        logger.info("mongoreact instance %s stopped (clean: %s)", self.instance_id, clean)
        return clean

    @property
    def is_running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._state == "running"

    @property
    def is_leader(self) -> bool:
        """Whether this instance currently plans for the cluster."""
        return self._elector is not None and self._elector.is_leader()

    def wake_workers(self) -> None:
        """Have this instance's workers poll for due tasks now."""
        if self._workers is not None:
            self._workers.wake()

    # Management API (works before start(), and for tasks other instances register).

    def get_tasks(
        self,
        task: str | None = None,
        status: str | Sequence[str] | None = None,
        source_doc_filter: Mapping[str, Any] | None = None,
        error: str | re.Pattern[str] | None = None,
        limit: int = 50,
        skip: int = 0,
        sort: Any = None,
    ) -> list[dict[str, Any]]:
        """Task records matching the filters, one page (``limit``/``skip``), sorted
        (default ``nextRunAt`` ascending); see docs/management.md."""
        query = TaskQuery.build(task, status, error, source_doc_filter)
        return self._manager().find(query, limit=limit, skip=skip, sort=parse_sort(sort))

    def count_tasks(
        self,
        task: str | None = None,
        status: str | Sequence[str] | None = None,
        source_doc_filter: Mapping[str, Any] | None = None,
        error: str | re.Pattern[str] | None = None,
    ) -> int:
        """How many task records match the filters."""
        return self._manager().count(TaskQuery.build(task, status, error, source_doc_filter))

    def retry_tasks(
        self,
        task: str | None = None,
        status: str | Sequence[str] | None = None,
        source_doc_filter: Mapping[str, Any] | None = None,
        error: str | re.Pattern[str] | None = None,
    ) -> RetryResult:
        """Run matching tasks again now, with a fresh attempt count. Safe while they
        run: a running task becomes ``processing_dirty`` and runs again after."""
        return self._manager().retry(TaskQuery.build(task, status, error, source_doc_filter))

    def get_task(self, task: str, doc_id: Any) -> dict[str, Any] | None:
        """The record of ``task`` for source document ``doc_id``, with its history."""
        return self._manager().get(task, doc_id)

    # Metrics.

    def prometheus_registry(self) -> CollectorRegistry | None:
        """A prometheus-client ``CollectorRegistry`` with mongoreact's metrics, or
        ``None`` when monitoring is disabled or prometheus-client is not installed."""
        if not self._settings.monitoring.enabled:
            return None
        with self._lock:
            if self._registry_cache is None:
                self._registry_cache = build_registry(self._figures)
            registry: CollectorRegistry | None = self._registry_cache
            return registry

    def _figures(self) -> dict[str, Any]:
        """What a scrape reports (see ``monitoring``)."""
        own = self.measurements.snapshot()
        cluster = self._settings.monitoring.scrape_mode == "cluster"
        figures: dict[str, Any] = {"measurements": own}
        if self._database is None or self._globals is None:
            return figures
        now = self.clock.now()
        if cluster:
            pushed = self._globals.pushed_metrics(stale_before(now, self._settings))
            figures["measurements"] = cluster_measurements(own, pushed, self.instance_id)
        if cluster or self.is_leader:
            figures["queue"] = self._queue_figures(now)
        return figures

    def _queue_figures(self, now: dt.datetime) -> dict[str, Any]:
        assert self._task_store is not None and self._globals is not None
        preference = _READ_PREFERENCES[self._settings.monitoring.read_preference]
        collections = list(self._manager().collections(None).values())
        queues = self._task_store.queue_summary(collections, now, preference)
        depth = {task: queue.counts for task, queue in queues.items()}
        lag = {task: queue.lag for task, queue in queues.items() if queue.lag is not None}
        state = self._globals.planner_state()
        position, reconciled = state.get("streamPositionAt"), state.get("reconciledAt")
        return {
            "depth": depth,
            "lag": lag,
            "stream_lag": max(0.0, (now - as_utc(position)).total_seconds()) if position else None,
            "reconciled_at": as_utc(reconciled).timestamp() if reconciled else None,
        }

    # Dashboard.

    def dashboard_app(
        self, *, read_only: bool = False, auth: Callable[[dict[str, Any]], bool] | None = None
    ) -> DashboardApp:
        """The web dashboard as a WSGI application (mount it, or ``mongoreact dashboard``).
        ``auth(environ) -> bool`` may refuse requests; ``read_only`` refuses actions."""
        return DashboardApp(self, read_only=read_only, auth=auth)

    def overview(self) -> dict[str, Any]:
        """Counts per task and status, lag, the leader and the instances heard from."""
        manager = self._manager()
        assert self._database is not None
        tasks = TaskStore(self._database)
        globals_store = GlobalsStore(self._database, self._settings.globals_collection)
        now = self.clock.now()
        known = manager.collections(None)
        queues = {name: TaskQueue(collection=collection) for name, collection in known.items()}
        queues.update(tasks.queue_summary(list(known.values()), now, all_statuses=True))
        rows = [
            {"task": task, "collection": queue.collection, "counts": queue.counts,
             "lagSeconds": queue.lag or 0.0}
            for task, queue in queues.items()
        ]  # fmt: skip
        lease = globals_store.leader_lease()
        live = lease.get("expiresAt") is not None and as_utc(lease["expiresAt"]) > now
        pushed = globals_store.pushed_metrics(stale_before(now, self._settings))
        state = globals_store.planner_state()
        return {
            "tasks": sorted(rows, key=lambda row: row["task"]),
            "leader": {"instanceId": lease.get("instanceId") if live else None,
                       "epoch": lease.get("epoch"), "expiresAt": lease.get("expiresAt")},
            "instances": sorted(pushed),
            "streamPositionAt": state.get("streamPositionAt"),
            "reconciledAt": state.get("reconciledAt"),
            "lastCleanupAt": state.get("lastCleanupAt"),
        }  # fmt: skip

    def defer_task(self, task: str, doc_id: Any, delay: dt.timedelta) -> int:
        """Make one waiting or failed task due only after ``delay``."""
        collection = self._manager().collections(task)[task]
        assert self._database is not None
        until = self.clock.now() + delay
        return TaskStore(self._database).defer(collection, task, doc_id, until)

    # Helpers.

    def with_lock(self, key: object, ttl: object = "30s", wait: object = "3s") -> Lock:
        """A distributed lock on ``key`` (context manager or decorator), renewed while
        held; ``LockAlreadyAcquiredError`` if it stays taken for ``wait``."""
        return Lock(self._db(), key, ttl=ttl, wait=wait)

    def with_transaction(self, fn: Callable[[ClientSession], T]) -> T:
        """``fn(session)`` in a transaction, retried on transient errors; post-commit
        hooks (``register_post_commit_hook``) run once, after the commit."""
        return with_transaction(self._db().client, fn)

    def _db(self) -> Database[Document]:
        """The database, connecting without starting when needed (management, helpers)."""
        with self._lock:
            if self._database is None:
                if self._state == "stopped":
                    raise NotStartedError("this instance is stopped")
                self._database = self._connect()
            return self._database

    def _manager(self) -> TaskManager:
        local = {d.name: d.collection for d in self._registry}
        database = self._db()
        globals_ = GlobalsStore(database, self._settings.globals_collection)
        return TaskManager(TaskStore(database), globals_, local)

    def __enter__(self) -> ReactiveTasks:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Internals.

    def _connect(self) -> Database[Document]:
        settings = self._settings
        if settings.client is not None:
            client = settings.client
        elif self._client is not None:
            client = self._client  # opened earlier for the management API
        else:
            assert settings.uri is not None
            client = MongoClient(settings.uri, tz_aware=True)
            self._client = client
        name = settings.database
        if name is None and settings.uri is not None:
            name = parse_uri(settings.uri).get("database")
        if name is None:
            try:
                name = client.get_default_database().name
            except Exception:
                name = None
        if not name:
            self._disconnect()
            raise ConfigError("database", None, "name the database (database= or in the URI)")
        return library_database(client, name)

    def _prepare(self, database: Database[Document]) -> None:
        reply = hello(database)
        if not reply.get("setName") and reply.get("msg") != "isdbgrid":
            raise MongoReactError(
                "mongoreact needs change streams: connect to a replica set (a single-node "
                "replica set is enough) or a sharded cluster"
            )
        tasks = TaskStore(database)
        for definition in self._registry:
            _validate_with_server(tasks, definition)
        for tasks_collection in self._registry.tasks_collections:
            tasks.ensure_indexes(tasks_collection)
        self.clock.sync(lambda: hello(database))
        self._task_store = tasks
        self._globals = GlobalsStore(database, self._settings.globals_collection)
        self._database = database
        self._publish_definitions()

    def _publish_definitions(self) -> None:
        assert self._globals is not None and self._task_store is not None
        for definition in self._registry:
            published = self._globals.publish_spec(spec_of(definition))
            if published.older:
                logger.warning(
                    "task %s: another instance runs a newer handler_version; the cluster "
                    "plans with its definition",
                    definition.name,
                )
                continue
            if published.trigger_changed and definition.evolution.reconcile_on_trigger_change:
                logger.info("task %s: trigger changed; reconciling", definition.name)
                self._globals.mark_unreconciled([definition.name])
            policy = definition.evolution.on_handler_version_change
            if published.upgraded and policy != "none":
                count = self._task_store.reprocess(
                    definition, failed_only=policy == "reprocess_failed"
                )
                logger.info(
                    "task %s: handler_version %d: %s reset %d record(s) to pending",
                    definition.name, definition.evolution.handler_version, policy, count,
                )  # fmt: skip
        self._specs_touched = time.monotonic()

    def _planning_registry(self) -> TaskRegistry:
        """Every task some instance registers (recently): the leader plans them all."""
        assert self._globals is not None
        registry = TaskRegistry()
        local = {d.name: d for d in self._registry}
        for spec in self._globals.load_specs(self.clock.now() - SPEC_TTL):
            name = str(spec.get("task"))
            mine = local.pop(name, None)
            version = mine.evolution.handler_version if mine else 0
            newer = int(spec.get("handlerVersion", 1)) > version
            try:
                registry.add(definition_from_spec(spec) if newer or mine is None else mine)
            except Exception:
                logger.exception("ignoring the unreadable published definition of %r", name)
        for definition in local.values():  # not published yet (should not happen)
            registry.add(definition)
        return registry

    def _on_heartbeat(self, leading: bool) -> None:
        """Every leader-election round: keep our specs fresh; the leader picks up tasks
        published (or changed) by other instances."""
        assert self._globals is not None
        if time.monotonic() - self._specs_touched > SPEC_TOUCH_INTERVAL:
            self._globals.touch_specs([d.name for d in self._registry])
            self._specs_touched = time.monotonic()
        if leading and (self._planning is None or not self._planning.is_running):
            # The lease is ours, so a planner must run: never hold the lease and plan
            # nothing. (A planner stops itself when it sees the lease lapse locally.)
            logger.warning(
                "this instance holds the lease but its planner had stopped; restarting it"
            )
            self._start_planning()
        elif leading:
            registry = self._planning_registry()
            if planning_signature(list(registry)) != self._planning_signature:
                logger.info("the published task definitions changed; restarting planning")
                self._start_planning(registry)

    def _launch(self, database: Database[Document]) -> None:
        assert self._task_store is not None and self._globals is not None
        slots = SlotStore(database, self._settings.globals_collection)
        self._leases = LeaseKeeper(
            settings=self._settings,
            store=self._task_store,
            slots=slots,
            measurements=self.measurements,
        )
        self._workers = WorkerPool(
            settings=self._settings,
            registry=self._registry,
            store=self._task_store,
            clock=self.clock,
            leases=self._leases,
            throttles=Throttles(self._globals, self.clock),
            slots=slots,
            measurements=self.measurements,
        )
        self._elector = LeaderElector(
            settings=self._settings,
            store=self._globals,
            clock=self.clock,
            hello=lambda: hello(database),
            on_elected=self._start_planning,
            on_heartbeat=self._on_heartbeat,
            measurements=self.measurements,
            on_deposed=self._retire_planning,
        )
        monitoring = self._settings.monitoring
        if monitoring.enabled and monitoring.scrape_mode == "cluster":
            self._pusher = MetricsPusher(
                settings=self._settings, store=self._globals, measurements=self.measurements
            )
            self._pusher.start()
        if self._cron_tasks:
            self._cron_runner = CronRunner(
                settings=self._settings, database=database, tasks=self._cron_tasks,
                clock=self.clock,
            )  # fmt: skip
            self._cron_runner.publish()
            self._cron_runner.start()
        self._leases.start()
        self._workers.start()
        self._elector.start()

    def _start_planning(self, registry: TaskRegistry | None = None) -> None:
        assert self._database is not None and self._task_store is not None
        assert self._globals is not None and self._elector is not None
        if registry is None:
            registry = self._planning_registry()
        self._planning_signature = planning_signature(list(registry))
        events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * self._settings.batch_size)
        reader = StreamReader(
            settings=self._settings,
            database=self._database,
            registry=registry,
            globals_store=self._globals,
            events=events,
            on_history_lost=self._on_history_lost,
            measurements=self.measurements,
            epoch=self._elector.epoch,
        )
        planner = Planner(
            settings=self._settings,
            registry=registry,
            task_store=self._task_store,
            globals_store=self._globals,
            events=events,
            stream_open=reader.opened,
            is_leader=self._elector.is_leader,
            on_planned=self._on_planned,
            measurements=self.measurements,
            epoch=self._elector.epoch,
        )
        cleaner = Cleaner(
            settings=self._settings,
            registry=registry,
            task_store=self._task_store,
            globals_store=self._globals,
            clock=self.clock,
            is_leader=self._elector.is_leader,
        )
        # The planners being replaced stop on their own (they check their stop event
        # before every write); waiting for them here would hold up the leader election.
        self._retire_planning()
        self._retired = [loop for loop in self._retired if not loop.join(0)]
        self._planning = _Planning(reader, planner, cleaner)
        for loop in self._planning:
            loop.start()

    def _retire_planning(self) -> None:
        """Stop planning at once; the threads finish in the background."""
        planning, self._planning = self._planning, None
        if planning is not None:
            for loop in planning:
                loop.stop()
            self._retired.extend(planning)

    def _join_retired(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for loop in list(self._retired):
            if loop.join(max(0.0, deadline - time.monotonic())):
                self._retired.remove(loop)
            else:
                logger.warning("%s did not stop within %.1fs", loop.name, timeout)
        return not self._retired

    def _on_planned(self, definition: TaskDefinition) -> None:
        if self._workers is not None:
            self._workers.wake(definition.debounce.total_seconds())

    def _on_history_lost(self) -> None:
        # Runs in the stream reader, after the stream closed and before it reopens
        # from now (the reader has logged why, at ERROR).
        logger.info("reconciling every task from the beginning")
        assert self._globals is not None
        self._globals.reset_reconciliation()
        planning = self._planning
        if planning is not None:
            planning.planner.request_reconciliation()

    def _disconnect(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except PyMongoError:
                logger.debug("error closing the client", exc_info=True)
            self._client = None


class _Planning(NamedTuple):
    """The leader's threads."""

    reader: StreamReader
    planner: Planner
    cleaner: Cleaner

    @property
    def is_running(self) -> bool:
        """Whether every one of them still runs."""
        return all(loop.is_running for loop in self)


def library_database(client: MongoClient[Document], name: str) -> Database[Document]:
    """Database ``name`` as mongoreact uses it, whatever the client's own settings.

    Planning, claims, fences and late-binding reads go to the primary; every write is
    acknowledged by a majority (a write acknowledged by one member can be rolled back
    after a failover, and a rolled-back planning write or resume token loses events);
    reads use "majority" read concern, so nothing decided on them can be rolled back
    (it is also the only read concern MongoDB accepts for change streams). Inside a
    handler's transaction the transaction's own concerns apply (pymongo does that).
    """
    return client.get_database(
        name,
        read_preference=ReadPreference.PRIMARY,
        write_concern=WriteConcern("majority"),
        read_concern=ReadConcern("majority"),
    )


def _validate_with_server(tasks: TaskStore, definition: TaskDefinition) -> None:
    try:
        tasks.validate_definition(definition)
    except OperationFailure as error:
        reason = error.details.get("errmsg") if error.details else str(error)
        raise ConfigError(
            "filter",
            definition.filter,
            f"task {definition.name!r}: the server rejected the filter or watch_projection: "
            f"{reason}",
        ) from error
