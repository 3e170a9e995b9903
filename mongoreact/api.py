"""The module-level API: one default ``ReactiveTasks`` per process.

``mongoreact.init(...)`` creates it; ``register``, ``task``, ``start``, ``stop`` and the
other functions act on it, with the signatures and docstrings of the ``ReactiveTasks``
methods of the same names. Code that needs several instances uses ``ReactiveTasks``
directly.
"""

from __future__ import annotations

import functools
import inspect
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from pymongo.client_session import ClientSession

from .config.options import InitOptions, Unpack
from .errors import MongoReactError, NotStartedError
from .reactive_tasks import ReactiveTasks

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

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


def initialized() -> ReactiveTasks | None:
    """The default instance if ``init()`` was called, else ``None``."""
    return _default


def instance() -> ReactiveTasks:
    """The default instance; ``NotStartedError`` before ``init()``."""
    if _default is None:
        raise NotStartedError("call mongoreact.init(...) first")
    return _default


def stop(timeout: float = 30.0) -> bool:
    """Stop the default instance; ``True`` if no handler was left running."""
    if _default is None:
        return True
    return _default.stop(timeout)


def _on_default(method: Callable[Concatenate[ReactiveTasks, P], R]) -> Callable[P, R]:
    """``ReactiveTasks.method`` as a function acting on the default instance, with the
    method's signature and docstring."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(instance(), *args, **kwargs)

    signature = inspect.signature(method)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    call.__module__, call.__qualname__ = __name__, method.__name__
    return call


register = _on_default(ReactiveTasks.register)
task = _on_default(ReactiveTasks.task)
start = _on_default(ReactiveTasks.start)
get_tasks = _on_default(ReactiveTasks.get_tasks)
count_tasks = _on_default(ReactiveTasks.count_tasks)
retry_tasks = _on_default(ReactiveTasks.retry_tasks)
get_task = _on_default(ReactiveTasks.get_task)
prometheus_registry = _on_default(ReactiveTasks.prometheus_registry)
dashboard_app = _on_default(ReactiveTasks.dashboard_app)
with_lock = _on_default(ReactiveTasks.with_lock)
cron_task = _on_default(ReactiveTasks.cron_task)
run_cron_task = _on_default(ReactiveTasks.run_cron_task)
run_until_signalled = _on_default(ReactiveTasks.run_until_signalled)
audit_log = _on_default(ReactiveTasks.audit_log)


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
