"""The keyword options of ``init`` and ``register``, declared once with their types.

``init(**options)`` and ``register(**options)`` take ``Unpack[InitOptions]`` and
``Unpack[TaskOptions]``, so mypy and IDEs see each option and its type; the option
parsers (``settings.py``, ``definition.py``) take their lists of known names from these
declarations. The values are still checked at call time, whatever a type checker said:
a bad one raises ``ConfigError`` naming the option and the value.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from pymongo import MongoClient

    from .config.definition import CleanupPolicy, Evolution
    from .config.settings import MonitoringOptions
    from .policies.retry import RetryPolicy
    from .records import TaskInfo

__all__ = ["Duration", "InitOptions", "TaskOptions", "Unpack", "option_names"]

# Milliseconds, a timedelta, or text such as "1h30m" (see durations.py).
Duration = int | float | str | dt.timedelta


class InitOptions(TypedDict, total=False):
    """Options of ``init`` / ``ReactiveTasks(...)`` (docs/configuration.md)."""

    uri: str
    client: MongoClient[dict[str, Any]]
    database: str
    instance_id: str
    concurrency: int
    prefetch: int
    globals_collection: str
    task_filter: Callable[[TaskInfo], bool]
    task_caller: Callable[[Callable[[], None]], object]
    monitoring: MonitoringOptions | Mapping[str, Any] | bool
    cleanup_interval: Duration
    leader_ttl: Duration
    leader_heartbeat: Duration
    task_lease: Duration
    poll_min: Duration
    poll_max: Duration
    batch_window: Duration
    batch_max_wait: Duration
    batch_size: int


class TaskOptions(TypedDict, total=False):
    """Options of ``register`` / ``@task`` besides ``task``, ``collection`` and
    ``handler`` (docs/tasks.md, docs/configuration.md)."""

    filter: Mapping[str, Any] | None
    watch_projection: Mapping[str, Any] | None
    debounce: Duration
    max_debounce: Duration | None
    retry_policy: RetryPolicy | Mapping[str, Any] | None
    cleanup_policy: CleanupPolicy | Mapping[str, Any] | None
    execution_history_limit: int
    evolution: Evolution | Mapping[str, Any] | None
    recheck_interval: Duration | None
    max_concurrency: int | None
    timeout: Duration | None


def option_names(options: type) -> tuple[str, ...]:
    """The option names a TypedDict declares."""
    return tuple(options.__annotations__)
