"""``ReactiveTasks``: one mongoreact instance, the class behind the module-level API.

A facade: it keeps the registrations and the life cycle's state, and hands the work
on: to the runtime that ``start()`` builds (``_runtime``), to the management API
(``management``) for queries and operators' actions, and to ``monitoring`` for figures.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bson import Timestamp
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ._runtime import Runtime
from .audit import Actor, acting_as, current_actor, scope_of
from .clock import ServerClock
from .cluster.presence import gone_before
from .config.definition import TaskDefinition, build_definition
from .config.durations import DurationLike, parse_duration
from .config.options import InitOptions, TaskOptions, Unpack
from .config.registry import TaskRegistry
from .config.settings import Settings, build_settings
from .config.uri import redact_uri, without_secrets
from .cron import CronTask, build_cron_task
from .dashboard.app import DashboardApp
from .dashboard.redaction import Redaction
from .dashboard.security import Auth
from .errors import (
    ConfigError,
    MongoReactError,
    NotStartedError,
    ServerUnreachableError,
    StartCancelledError,
)
from .execution.context import Handler
from .locks import Lock
from .management import RetryResult, TaskManager, TaskQuery, filtered, parse_sort
from .monitoring.measurements import Measurements
from .monitoring.prometheus import FigureReader, Figures, build_registry
from .signals import run_until_signalled
from .store.audit import AuditStore
from .store.connection import Connection
from .store.cron import CronStore
from .store.globals import GlobalsStore
from .store.server import last_write_time, wait_for_server
from .store.tasks import TaskStore
from .transactions import with_transaction

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class State(str, enum.Enum):
    """Where an instance is in its life: ``start()`` takes it from ``NEW`` through
    ``STARTING`` to ``RUNNING``, ``stop()`` to ``STOPPED`` (a failed start back to
    ``NEW``)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


T = TypeVar("T")
CONNECT_TIMEOUT: Final = 30.0  # seconds start() waits for MongoDB


class ReactiveTasks:
    """One mongoreact instance: its tasks, its leader election, planner and workers.

    Several instances may live in one process; each behaves like a separate app
    instance (its own ``instance_id``, threads and leases). Takes the options of
    :func:`mongoreact.init`; bad options raise ``ConfigError`` here, not later.
    """

    def __init__(self, **options: Unpack[InitOptions]) -> None:
        self._settings: Settings = build_settings(options)
        self._registry = TaskRegistry()
        self._cron_tasks: dict[str, CronTask] = {}
        self._state = State.NEW
        self._lock = threading.RLock()
        self._connection = Connection(self._settings)
        self._runtime: Runtime | None = None  # from start() on
        self._start_cancelled = threading.Event()  # set by stop() during a start()
        self._prometheus: CollectorRegistry | None = None
        self._reader: FigureReader | None = None  # figures before start()
        self.clock = ServerClock()
        self.measurements = Measurements()

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
            if self._state != State.NEW:
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
            if self._state != State.NEW:
                raise ConfigError("name", name, "register cron tasks before start()")
            if cron.name in self._cron_tasks:
                raise ConfigError("name", name, "a cron task with this name already exists")
            self._cron_tasks[cron.name] = cron
        return cron

    def run_cron_task(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Run cron task ``name`` now on whichever instance claims it first; with
        ``wait``, return once that run has finished (``TimeoutError`` after ``timeout``)."""
        manager = self._manager()
        requested = manager.request_cron_run(name)
        self._audit("run cron task", {"name": name}, 1)
        if self._runtime is not None:
            self._runtime.wake_cron()
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while not manager.cron_run_finished(name, requested):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cron task {name!r} did not finish within {timeout}s")
            # Polls the database: whichever instance claims the run says so only there.
            time.sleep(0.05)

    def cron_tasks(self) -> list[dict[str, Any]]:
        """Every cron task's schedule, lease and recent runs (any instance's)."""
        return self._manager().cron_tasks()

    @property
    def definitions(self) -> list[TaskDefinition]:
        """The registered tasks."""
        return list(self._registry)

    @property
    def has_cron_tasks(self) -> bool:
        """Whether any cron task is registered."""
        return bool(self._cron_tasks)

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

    def start(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect, create indexes, check every task with the server, start the threads.

        Non-blocking once connected: planning and work happen on background threads.
        Idempotent. Waits up to ``timeout`` seconds for MongoDB, logging its progress
        (``ServerUnreachableError`` then, or at once when the credentials are
        refused); ``stop()`` from another thread or a signal handler cancels the wait
        (``StartCancelledError``).
        """
        with self._lock:
            if self._state == State.RUNNING:
                return
            if self._state in (State.STOPPED, State.STARTING):
                raise MongoReactError(
                    "a stopped ReactiveTasks cannot be started again"
                    if self._state == State.STOPPED
                    else "start() is already under way in another thread"
                )
            if not len(self._registry) and not self._cron_tasks:
                raise ConfigError("register", None, "register at least one task before start()")
            cancelled = self._start_cancelled = threading.Event()
            self._state = State.STARTING
        try:
            database = self._connection.database()
            self._wait_for_server(database, timeout, cancelled)
            runtime = Runtime(
                settings=self._settings,
                registry=self._registry,
                cron_tasks=self._cron_tasks,
                database=database,
                clock=self.clock,
                measurements=self.measurements,
                tasks=self._known_tasks,
            )
            runtime.prepare()
            with self._lock:
                if cancelled.is_set():  # stop() while the indexes were being created
                    raise StartCancelledError("start() cancelled by stop()")
                runtime.start()
                self._runtime = runtime
                self._state = State.RUNNING
            if cancelled.is_set():
                # A signal handler's stop() on this very thread (the lock is
                # re-entrant) while the threads started: honour it now.
                self.stop(0)
                raise StartCancelledError("start() cancelled by stop()")
        except BaseException:
            # Only this thread closes the client of a start that failed or was
            # cancelled: a stop() meanwhile must not close it under the start's feet.
            with self._lock:
                self._state = State.STOPPED if cancelled.is_set() else State.NEW
            self._connection.close()
            raise
        logger.info(
            "mongoreact instance %s started with %d task(s)",
            self.instance_id,
            len(self._registry),
        )

    def _wait_for_server(
        self, database: Database[dict[str, Any]], timeout: float, cancelled: threading.Event
    ) -> None:
        uri = self._settings.uri
        target = redact_uri(uri) if uri else "the servers of the given client"
        logger.info("connecting to MongoDB at %s (waiting up to %.0fs)", target, timeout)
        waited = wait_for_server(
            database.client,
            timeout=timeout,
            cancelled=cancelled,
            describe=lambda text: without_secrets(text, uri),
        )
        if waited.outcome == "cancelled":
            raise StartCancelledError("start() cancelled by stop() while waiting for MongoDB")
        if waited.outcome == "auth":
            raise ServerUnreachableError(
                f"MongoDB at {target} refused the credentials (authentication failed): "
                f"{waited.reason}"
            )
        if waited.outcome == "timeout":
            raise ServerUnreachableError(
                f"cannot reach MongoDB at {target} within {timeout:.0f}s: {waited.reason}"
            )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop planning and claiming, wait up to ``timeout`` seconds for running
        handlers, give up the leader lease. Returns ``True`` if shutdown was clean (no
        handler was still running). Safe to call more than once, from a signal handler
        too; a ``start()`` still waiting for MongoDB is cancelled at once."""
        with self._lock:
            runtime = self._runtime
            if self._state == State.STARTING:
                self._start_cancelled.set()  # start() closes its client itself
                return True
            if self._state != State.RUNNING or runtime is None:
                self._state = State.STOPPED
                self._connection.close()  # a client opened for the management API
                return True
            self._state = State.STOPPED
        clean = runtime.stop(timeout)
        # A handler still running may still use the client: close it after that.
        runtime.after_handlers(self._connection.close)
        logger.info("mongoreact instance %s stopped (clean: %s)", self.instance_id, clean)
        return clean

    def run_until_signalled(self, stop_timeout: float = 30.0) -> bool:
        """Start, run until SIGTERM or SIGINT, stop (waiting up to ``stop_timeout``
        seconds for running handlers); whether the stop was clean. A signal during the
        start cancels it; a second Ctrl+C exits at once. For scripts: the loop behind
        ``mongoreact run`` and Django's ``runreactive`` (docs/workers.md)."""
        return run_until_signalled(self, stop_timeout=stop_timeout).clean

    @property
    def is_running(self) -> bool:
        """Between ``start()`` and ``stop()``."""
        return self._state == State.RUNNING

    @property
    def is_leader(self) -> bool:
        """Whether this instance currently plans for the cluster."""
        return self._runtime is not None and self._runtime.is_leader()

    def health(self) -> dict[str, Any]:
        """Whether this instance is healthy: running, with every background thread
        alive (``threads``: name -> alive). For liveness probes (``mongoreact run
        --metrics-port`` serves it on ``/health``)."""
        runtime = self._runtime
        threads = runtime.threads() if runtime is not None and self.is_running else {}
        return {
            "healthy": self.is_running and all(threads.values()),
            "running": self.is_running,
            "leader": self.is_leader,
            "instanceId": self.instance_id,
            "threads": threads,
        }

    def wake_workers(self) -> None:
        """Have this instance's workers poll for due tasks now."""
        if self._runtime is not None:
            self._runtime.wake_workers()

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
        query = TaskQuery.build(task, status, source_doc_filter, error)
        return self._manager().find(query, limit=limit, skip=skip, sort=parse_sort(sort))

    @filtered
    def count_tasks(self, query: TaskQuery) -> int:
        """How many task records match the filters (those of ``get_tasks``)."""
        return self._manager().count(query)

    @filtered
    def retry_tasks(self, query: TaskQuery) -> RetryResult:
        """Run matching tasks again now, with a fresh attempt count. Safe while they
        run: a running task becomes ``processing_dirty`` and runs again after."""
        result = self._manager().retry(query)
        self._audit("retry", _query_scope(query), result.modified_count)
        return result

    def last_write_time(self) -> Timestamp:
        """The cluster time of the last write the server has applied."""
        return last_write_time(self._db())

    def planned_through(self) -> Timestamp | None:
        """The cluster time before which the leader has planned every change of the
        watched collections, once the existing documents of this instance's tasks are
        planned too (``None`` until then); compare it with ``last_write_time()`` to
        know whether planning has caught up with a write."""
        return self._manager().planned_through()

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
            if self._prometheus is None:
                self._prometheus = build_registry(self._figures)
            return self._prometheus

    def _figures(self) -> Figures:
        runtime = self._runtime
        if runtime is not None and self.is_running:
            return runtime.read_figures()
        if self._state == State.STOPPED:
            return {"measurements": self.measurements.snapshot()}
        # Never started (a web process serving /metrics): the cluster's figures, read
        # from what the running instances push and from the task records.
        with self._lock:
            if self._reader is None:
                database = self._db()
                self._reader = FigureReader(
                    settings=self._settings,
                    measurements=self.measurements,
                    clock=self.clock,
                    task_store=TaskStore(database),
                    globals_store=GlobalsStore(database, self._settings.globals_collection),
                    tasks=self._known_tasks,
                    is_leader=lambda: False,
                )
            reader = self._reader
        return reader.read()

    def _known_tasks(self) -> dict[str, str]:
        """Task name -> source collection of every task registered anywhere."""
        return self._manager().collections(None)

    # Dashboard.

    def dashboard_app(
        self,
        *,
        read_only: bool = False,
        auth: Auth | None = None,
        allowed_hosts: Sequence[str] | None = None,
        redaction: Redaction | None = None,
    ) -> DashboardApp:
        """The web dashboard as a WSGI application (mount it, or ``mongoreact dashboard``).

        ``auth(environ)`` names the user (a ``DashboardUser`` with a role, ``True`` for
        an operator) or refuses the request (``None``/``False``); ``read_only`` makes
        everyone a viewer. ``allowed_hosts`` (Django's ``ALLOWED_HOSTS`` rules; default
        the loopback names) are the names it answers to. ``redaction`` hides watched
        fields and error texts. See docs/dashboard.md."""
        return DashboardApp(
            self, read_only=read_only, auth=auth, allowed_hosts=allowed_hosts, redaction=redaction
        )

    def overview(self) -> dict[str, Any]:
        """Counts per task and status, lag, the leader and the instances heard from."""
        now = self.clock.now()
        return self._manager().overview(now, gone_before(now, self._settings))

    @filtered
    def discard_failed_tasks(self, query: TaskQuery) -> int:
        """Delete the matching records that are ``failed`` (given up on); how many. A
        later change of a document plans its task again."""
        deleted = self._manager().discard_failed(query)
        self._audit("discard", _query_scope(query), deleted)
        return deleted

    def pause_task(self, task: str, duration: DurationLike) -> None:
        """Have no instance of the cluster claim ``task`` for ``duration`` (a duration:
        ms, ``timedelta`` or ``"1h"``; running handlers finish); ``resume_task`` ends it
        sooner."""
        delay = parse_duration(duration, "duration")
        self._manager().pause(task, delay)
        self._audit("pause", {"task": task, "delay": str(delay)}, 1)

    def resume_task(self, task: str) -> None:
        """End a cluster-wide pause of ``task`` (instances notice within a second)."""
        self._manager().resume(task)
        self._audit("resume", {"task": task}, 1)

    def defer_task(self, task: str, doc_id: Any, delay: DurationLike) -> int:
        """Make one waiting or failed task due only after ``delay`` (a duration: ms,
        ``timedelta`` or ``"1h"``)."""
        duration = parse_duration(delay, "delay")
        changed = self._manager().defer(task, doc_id, self.clock.now() + duration)
        self._audit("defer", {"task": task, "docId": doc_id, "delay": str(duration)}, changed)
        return changed

    # Helpers.

    def with_lock(self, key: object, ttl: DurationLike = "30s", wait: DurationLike = "3s") -> Lock:
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
            if self._state == State.STOPPED:
                raise NotStartedError("this instance is stopped")
            return self._connection.database()

    # Audit.

    def acting_as(self, actor: str, *, role: str = "operator", via: str = "api") -> Any:
        """A context manager: the record-changing calls made in the block (on this
        thread) are audited as ``actor``'s (the dashboard and the CLI name their users
        this way; elsewhere the OS user is)."""
        return acting_as(Actor(actor, role, via))

    def record_action(
        self,
        action: str,
        *,
        scope: Mapping[str, Any],
        count: int,
        actor: str | None = None,
        role: str = "operator",
        via: str = "api",
    ) -> None:
        """Add an action of your own to the cluster's audit log (the management calls
        that change records log themselves)."""
        who = Actor(actor, role, via) if actor is not None else current_actor()
        AuditStore(self._db(), self._settings.globals_collection).record(
            actor=who.name, role=who.role, action=action, scope=dict(scope), count=count,
            via=who.via,
        )  # fmt: skip

    def _audit(self, action: str, scope: Mapping[str, Any], count: int) -> None:
        """Log a change of records under the current actor. The change is made: a
        failure to log it is said at ERROR, and does not undo or repeat it."""
        try:
            self.record_action(action, scope=scope, count=count, actor=None)
        except PyMongoError as error:
            logger.error("could not write the audit log entry of a %s: %s", action, error)

    def audit_log(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest operator actions, newest first: ``at`` (server time), ``actor``,
        ``role``, ``action``, ``scope`` (Extended JSON), ``count``, ``via``."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ConfigError("limit", limit, "expected 1..1000")
        return AuditStore(self._db(), self._settings.globals_collection).recent(limit)

    def _manager(self) -> TaskManager:
        database = self._db()
        return TaskManager(
            TaskStore(database),
            GlobalsStore(database, self._settings.globals_collection),
            CronStore(database),
            {d.name: d.collection for d in self._registry},
        )

    def __enter__(self) -> ReactiveTasks:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _query_scope(query: TaskQuery) -> dict[str, Any]:
    return scope_of(query.task, query.statuses, query.error, query.source_doc_filter)
