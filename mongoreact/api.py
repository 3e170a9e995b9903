"""The module-level API: one default ``ReactiveTasks`` per process.

``mongoreact.init(...)`` creates it; ``register``, ``task``, ``start`` and ``stop`` act
on it. Code that needs several instances uses ``ReactiveTasks`` directly.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo.client_session import ClientSession

from .definition import Handler, TaskDefinition
from .errors import MongoReactError, NotStartedError
from .locks import Lock
from .management import RetryResult
from .options import InitOptions, TaskOptions, Unpack
from .reactive_tasks import ReactiveTasks

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)
T = TypeVar("T")

_default: ReactiveTasks | None = None
_lock = threading.Lock()


def init(**options: Unpack[InitOptions]) -> ReactiveTasks:
    """Configure the default instance (options as ``ReactiveTasks``); returns it.

    Calling ``init`` again replaces a default instance that is not running.
    """
    global _default
    with _lock:
        if _default is not None and _default.is_running:
            raise MongoReactError("mongoreact is running; call stop() before init() again")
        _default = ReactiveTasks(**options)
        return _default


def instance() -> ReactiveTasks:
    """The default instance; ``NotStartedError`` before ``init()``."""
    if _default is None:
        raise NotStartedError("call mongoreact.init(...) first")
    return _default


def register(
    task: str | None = None,
    collection: str | None = None,
    handler: Handler | None = None,
    **options: Unpack[TaskOptions],
) -> TaskDefinition:
    """Register a task on the default instance (see ``ReactiveTasks.register``)."""
    return instance().register(task=task, collection=collection, handler=handler, **options)


def task(
    task: str | None = None, collection: str | None = None, **options: Unpack[TaskOptions]
) -> Callable[[Handler], Handler]:
    """Decorator registering the decorated function as a task's handler."""
    return instance().task(task=task, collection=collection, **options)


def start() -> None:
    """Start the default instance's threads (non-blocking, idempotent)."""
    instance().start()


def stop(timeout: float = 30.0) -> bool:
    """Stop the default instance; ``True`` if no handler was left running."""
    if _default is None:
        return True
    return _default.stop(timeout)


def get_tasks(
    task: str | None = None,
    status: str | Sequence[str] | None = None,
    source_doc_filter: Mapping[str, Any] | None = None,
    error: str | re.Pattern[str] | None = None,
    limit: int = 50,
    skip: int = 0,
    sort: Any = None,
) -> list[dict[str, Any]]:
    """Task records matching the filters (see ``ReactiveTasks.get_tasks``)."""
    return instance().get_tasks(task, status, source_doc_filter, error, limit, skip, sort)


def count_tasks(
    task: str | None = None,
    status: str | Sequence[str] | None = None,
    source_doc_filter: Mapping[str, Any] | None = None,
    error: str | re.Pattern[str] | None = None,
) -> int:
    """How many task records match (see ``ReactiveTasks.count_tasks``)."""
    return instance().count_tasks(task, status, source_doc_filter, error)


def retry_tasks(
    task: str | None = None,
    status: str | Sequence[str] | None = None,
    source_doc_filter: Mapping[str, Any] | None = None,
    error: str | re.Pattern[str] | None = None,
) -> RetryResult:
    """Run matching tasks again (see ``ReactiveTasks.retry_tasks``)."""
    return instance().retry_tasks(task, status, source_doc_filter, error)


def get_task(task: str, doc_id: Any) -> dict[str, Any] | None:
    """One task record with its execution history."""
    return instance().get_task(task, doc_id)


def prometheus_registry() -> CollectorRegistry | None:
    """The default instance's Prometheus registry (``None`` if monitoring is off or
    prometheus-client is missing)."""
    return instance().prometheus_registry()


def dashboard_app(
    *, read_only: bool = False, auth: Callable[[dict[str, Any]], bool] | None = None
) -> Any:
    """The default instance's web dashboard, a WSGI application."""
    return instance().dashboard_app(read_only=read_only, auth=auth)


def with_lock(key: object, ttl: object = "30s", wait: object = "3s") -> Lock:
    """A distributed lock on the default instance's database (see ``ReactiveTasks``)."""
    return instance().with_lock(key, ttl=ttl, wait=wait)


def with_transaction(fn: Callable[[ClientSession], T]) -> T:
    """``fn(session)`` in a transaction on the default instance's client."""
    return instance().with_transaction(fn)


def install_signal_handlers(timeout: float = 30.0) -> None:
    """For scripts: on SIGTERM or SIGINT, stop the default instance (waiting up to
    ``timeout`` for running handlers), then exit as the signal would have.

    Call it from the main thread, after ``start()``. Under gunicorn or uWSGI, let the
    server own the signals and call ``stop()`` from its worker-exit hook instead.
    """
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping mongoreact", signum)
        stop(timeout)
        signal.signal(signum, previous.get(signum, signal.SIG_DFL))
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handle)


def cron_task(name: str, schedule: object, handler: Callable[[], object]) -> Any:
    """Register a cron task on the default instance (see ``ReactiveTasks.cron_task``)."""
    return instance().cron_task(name, schedule, handler)


def run_cron_task(name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
    """Run a cron task now (see ``ReactiveTasks.run_cron_task``)."""
    instance().run_cron_task(name, wait=wait, timeout=timeout)
