"""A registered task: its options, validated and converted once, at ``register`` time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..errors import ConfigError
from ..options import TaskOptions, option_names
from ..policies.retry import RetryPolicy, parse_retry_policy
from ._validate import (
    as_handler,
    as_int,
    as_mapping,
    as_name,
    bool_field,
    check_unknown,
    choice_field,
    duration_field,
    field_names,
    int_field,
)
from .durations import parse_duration, to_milliseconds
from .triggers import compile_watch_projection, normalize_filter

if TYPE_CHECKING:
    from ..execution.context import TaskContext

Handler = Callable[["TaskContext"], object]

DEFAULT_DEBOUNCE: Final = dt.timedelta(seconds=1)
MAX_DEBOUNCE_FACTOR: Final = 10
DELETE_WHEN: Final = ("sourceDocumentDeleted", "sourceDocumentDeletedOrNoLongerMatching", "never")
ON_HANDLER_VERSION_CHANGE: Final = ("none", "reprocess_failed", "reprocess_all")
TASKS_SUFFIX: Final = "_tasks"


@attrs.frozen(kw_only=True)
class CleanupPolicy:
    """When records of tasks whose source document is gone (or unmatched) are deleted.

    Checked however it is built: ``ConfigError`` names the option and the value."""

    delete_when: str = choice_field(
        "cleanup_policy.delete_when", DELETE_WHEN, "sourceDocumentDeleted"
    )
    keep_for: dt.timedelta = duration_field("cleanup_policy.keep_for", dt.timedelta(hours=24))


@attrs.frozen(kw_only=True)
class Evolution:
    """How a task reacts to a new handler version or a changed trigger.

    Checked however it is built: ``ConfigError`` names the option and the value."""

    handler_version: int = int_field("evolution.handler_version", 1, minimum=1)
    on_handler_version_change: str = choice_field(
        "evolution.on_handler_version_change", ON_HANDLER_VERSION_CHANGE, "none"
    )
    reconcile_on_trigger_change: bool = bool_field("evolution.reconcile_on_trigger_change", True)


@attrs.frozen(kw_only=True)
class TaskDefinition:
    """Everything mongoreact knows about one registered task."""

    name: str
    collection: str
    handler: Handler
    filter: dict[str, Any] | None
    watch_projection: dict[str, Any] | None
    watch_expression: Any
    debounce: dt.timedelta
    max_debounce: dt.timedelta
    retry_policy: RetryPolicy
    cleanup_policy: CleanupPolicy
    execution_history_limit: int
    evolution: Evolution
    recheck_interval: dt.timedelta | None = None
    max_concurrency: int | None = None
    # The handler's time limit (None: none); see execution/watchdog.py.
    timeout: dt.timedelta | None = None

    @property
    def tasks_collection(self) -> str:
        """Where this task's records live."""
        return self.collection + TASKS_SUFFIX

    @property
    def debounce_ms(self) -> int:
        """The debounce in the unit of MongoDB date arithmetic."""
        return to_milliseconds(self.debounce)

    @property
    def max_debounce_ms(self) -> int:
        """The longest a pending run can be pushed back by further changes."""
        return to_milliseconds(self.max_debounce)


_OPTIONS: Final = ("task", "collection", "handler", *option_names(TaskOptions))
# Runs kept on a record: each is a small subdocument, and a record must stay far from
# MongoDB's 16 MiB document limit and quick to read.
MAX_EXECUTION_HISTORY: Final = 1000


def build_definition(options: Mapping[str, Any]) -> TaskDefinition:
    """A ``TaskDefinition`` from ``register``'s keyword arguments, or ``ConfigError``."""
    check_unknown(options, _OPTIONS, "register()")
    for required in ("task", "collection", "handler"):
        if options.get(required) is None:
            raise ConfigError(required, None, "required")
    name = options["task"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("task", name, "expected a non-empty string")
    collection = as_name(options["collection"], "collection")
    if collection.endswith(TASKS_SUFFIX) or collection.startswith("system."):
        raise ConfigError("collection", collection, "cannot watch a tasks or system collection")
    debounce = parse_duration(options.get("debounce", DEFAULT_DEBOUNCE), "debounce")
    if options.get("max_debounce") is None:
        max_debounce = debounce * MAX_DEBOUNCE_FACTOR
    else:
        max_debounce = parse_duration(options["max_debounce"], "max_debounce")
        if max_debounce < debounce:
            raise ConfigError("max_debounce", options["max_debounce"], "shorter than debounce")
    projection = options.get("watch_projection")
    return TaskDefinition(
        name=name,
        collection=collection,
        handler=as_handler(options["handler"], "handler", ("ctx",)),
        filter=normalize_filter(options.get("filter")),
        watch_projection=dict(projection) if isinstance(projection, Mapping) else None,
        watch_expression=compile_watch_projection(projection),
        debounce=debounce,
        max_debounce=max_debounce,
        retry_policy=parse_retry_policy(options.get("retry_policy")),
        cleanup_policy=_parse_cleanup(options.get("cleanup_policy")),
        execution_history_limit=as_int(
            options.get("execution_history_limit", 5),
            "execution_history_limit",
            minimum=0,
            maximum=MAX_EXECUTION_HISTORY,
        ),
        evolution=_parse_evolution(options.get("evolution")),
        recheck_interval=_parse_recheck(options),
        max_concurrency=(
            None
            if options.get("max_concurrency") is None
            else as_int(options["max_concurrency"], "max_concurrency", minimum=1)
        ),
        timeout=_parse_timeout(options.get("timeout")),
    )


def _parse_timeout(value: object) -> dt.timedelta | None:
    if value is None:
        return None
    timeout = parse_duration(value, "timeout")
    if timeout <= dt.timedelta(0):
        raise ConfigError("timeout", value, "must be greater than zero (None: no limit)")
    return timeout


def _parse_cleanup(value: object) -> CleanupPolicy:
    if value is None or isinstance(value, CleanupPolicy):
        return value or CleanupPolicy()
    return CleanupPolicy(**as_mapping(value, "cleanup_policy", field_names(CleanupPolicy)))


def _parse_evolution(value: object) -> Evolution:
    if value is None or isinstance(value, Evolution):
        return value or Evolution()
    return Evolution(**as_mapping(value, "evolution", field_names(Evolution)))


def _parse_recheck(options: Mapping[str, Any]) -> dt.timedelta | None:
    value = options.get("recheck_interval")
    if value is None:
        return None
    interval = parse_duration(value, "recheck_interval")
    if interval <= dt.timedelta(0):
        raise ConfigError("recheck_interval", value, "must be greater than zero")
    if options.get("filter") is None:
        raise ConfigError("recheck_interval", value, "needs a filter to re-evaluate")
    return interval
