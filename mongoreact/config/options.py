"""The keyword options of ``init`` and ``register``, declared once with their types.

``init(**options)`` and ``register(**options)`` take ``Unpack[InitOptions]`` and
``Unpack[TaskOptions]``, so mypy and IDEs see each option and its type; the option
parsers (``settings.py``, ``definition.py``) take their lists of known names from these
declarations. The values are still checked at call time, whatever a type checker said:
a bad one raises ``ConfigError`` naming the option and the value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack

from .durations import DurationLike

if TYPE_CHECKING:
    from pymongo import MongoClient

    from ..records import TaskInfo
    from .definition import CleanupPolicy, Evolution
    from .retry import RetryPolicy
    from .settings import MonitoringOptions

__all__ = ["InitOptions", "TaskOptions", "Unpack", "option_names"]


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
    cleanup_interval: DurationLike
    leader_ttl: DurationLike
    leader_heartbeat: DurationLike
    task_lease: DurationLike
    poll_min: DurationLike
    poll_max: DurationLike
    batch_window: DurationLike
    batch_max_wait: DurationLike
    batch_size: int


class TaskOptions(TypedDict, total=False):
    """Options of ``register`` / ``@task`` besides ``task``, ``collection`` and
    ``handler`` (docs/tasks.md, docs/configuration.md)."""

    filter: Mapping[str, Any] | None
    watch_projection: Mapping[str, Any] | None
    debounce: DurationLike
    max_debounce: DurationLike | None
    retry_policy: RetryPolicy | Mapping[str, Any] | None
    cleanup_policy: CleanupPolicy | Mapping[str, Any] | None
    execution_history_limit: int
    evolution: Evolution | Mapping[str, Any] | None
    recheck_interval: DurationLike | None
    max_concurrency: int | None
    timeout: DurationLike | None


def option_names(options: type) -> tuple[str, ...]:
    """The option names a TypedDict declares."""
    return tuple(options.__annotations__)
