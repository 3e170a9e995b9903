"""The module-level API: one default ``ReactiveTasks`` per process.

``mongoreact.init(...)`` creates it; ``register``, ``task``, ``start`` and ``stop`` act
on it. Code that needs several instances uses ``ReactiveTasks`` directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .definition import Handler, TaskDefinition
from .engine import ReactiveTasks
from .errors import MongoReactError, NotStartedError

_default: ReactiveTasks | None = None
_lock = threading.Lock()


def init(**options: Any) -> ReactiveTasks:
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
    **options: Any,
) -> TaskDefinition:
    """Register a task on the default instance (see ``ReactiveTasks.register``)."""
    return instance().register(task=task, collection=collection, handler=handler, **options)


def task(
    task: str | None = None, collection: str | None = None, **options: Any
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
