"""A registered task: its options, validated and converted once, at ``register`` time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from ..errors import ConfigError
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
from .options import TaskOptions, option_names
from .retry import DEFAULT_RETRY_POLICY, RetryPolicy, parse_retry_policy
from .triggers import compile_watch_projection, normalize_filter

# A handler as this layer sees it: a callable of one argument. The argument is a
# TaskContext (execution/context.py, a layer above), which register() types as Handler.
AnyHandler = Callable[[Any], object]

DEFAULT_DEBOUNCE: Final = dt.timedelta(seconds=1)
MAX_DEBOUNCE_FACTOR: Final = 10
DELETE_WHEN: Final = ("sourceDocumentDeleted", "sourceDocumentDeletedOrNoLongerMatching", "never")
ON_HANDLER_VERSION_CHANGE: Final = ("none", "reprocess_failed", "reprocess_all")
TASKS_SUFFIX: Final = "_tasks"


def tasks_collection_of(source_collection: str) -> str:
    """Where the records of ``source_collection``'s tasks live: the one place that
    derives that name."""
    return source_collection + TASKS_SUFFIX


# Runs kept on a record: each is a small subdocument, and a record must stay far from
# MongoDB's 16 MiB document limit and quick to read.
MAX_EXECUTION_HISTORY: Final = 1000


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


def _task_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("task", value, "expected a non-empty string")
    return value


def _watched_collection(value: object) -> str:
    collection = as_name(value, "collection")
    if collection.endswith(TASKS_SUFFIX) or collection.startswith("system."):
        raise ConfigError("collection", collection, "cannot watch a tasks or system collection")
    return collection


def _projection(value: object) -> dict[str, Any] | None:
    compile_watch_projection(value)  # checks it
    return dict(value) if isinstance(value, Mapping) and value else None


def _parse_cleanup(value: object) -> CleanupPolicy:
    if value is None or isinstance(value, CleanupPolicy):
        return value or CleanupPolicy()
    return CleanupPolicy(**as_mapping(value, "cleanup_policy", field_names(CleanupPolicy)))


def _parse_evolution(value: object) -> Evolution:
    if value is None or isinstance(value, Evolution):
        return value or Evolution()
    return Evolution(**as_mapping(value, "evolution", field_names(Evolution)))


def _handler(value: object) -> AnyHandler:
    checked: AnyHandler = as_handler(value, "handler", ("ctx",))
    return checked


def _max_debounce(value: object) -> dt.timedelta:
    return parse_duration(value, "max_debounce")


def _optional_positive(value: object, option: str) -> dt.timedelta | None:
    if value is None:
        return None
    duration = parse_duration(value, option)
    if duration <= dt.timedelta(0):
        raise ConfigError(option, value, "must be greater than zero (None: none)")
    return duration


def _recheck_interval(value: object) -> dt.timedelta | None:
    return _optional_positive(value, "recheck_interval")


def _timeout(value: object) -> dt.timedelta | None:
    return _optional_positive(value, "timeout")


def _max_concurrency(value: object) -> int | None:
    return None if value is None else as_int(value, "max_concurrency", minimum=1)


def _history_limit(_: object, __: object, value: object) -> None:
    as_int(value, "execution_history_limit", minimum=0, maximum=MAX_EXECUTION_HISTORY)


def _compiled_projection(definition: TaskDefinition) -> Any:
    return compile_watch_projection(definition.watch_projection)


def _ten_debounces(definition: TaskDefinition) -> dt.timedelta:
    return definition.debounce * MAX_DEBOUNCE_FACTOR


@attrs.frozen(kw_only=True)
class TaskDefinition:
    """Everything mongoreact knows about one registered task.

    Every field converts and checks its value, however the definition is built
    (``register``'s keyword arguments, or this class directly): ``ConfigError`` names
    the option and the value. ``watch_expression`` and ``max_debounce`` are derived from
    ``watch_projection`` and ``debounce`` when not given: build a new definition rather
    than ``attrs.evolve`` one, which would keep the derived values."""

    name: str = attrs.field(converter=_task_name)
    collection: str = attrs.field(converter=_watched_collection)
    handler: AnyHandler = attrs.field(converter=_handler)
    filter: dict[str, Any] | None = attrs.field(default=None, converter=normalize_filter)
    watch_projection: dict[str, Any] | None = attrs.field(default=None, converter=_projection)
    # The aggregation expression of the watched snapshot; compiled from watch_projection
    # unless given (a definition rebuilt from another instance's published spec).
    watch_expression: Any = attrs.field(
        default=attrs.Factory(_compiled_projection, takes_self=True)
    )
    debounce: dt.timedelta = duration_field("debounce", DEFAULT_DEBOUNCE)
    max_debounce: dt.timedelta = attrs.field(
        default=attrs.Factory(_ten_debounces, takes_self=True), converter=_max_debounce
    )
    retry_policy: RetryPolicy = attrs.field(
        default=DEFAULT_RETRY_POLICY, converter=parse_retry_policy
    )
    cleanup_policy: CleanupPolicy = attrs.field(factory=CleanupPolicy, converter=_parse_cleanup)
    execution_history_limit: int = attrs.field(default=5, validator=_history_limit)
    evolution: Evolution = attrs.field(factory=Evolution, converter=_parse_evolution)
    recheck_interval: dt.timedelta | None = attrs.field(default=None, converter=_recheck_interval)
    max_concurrency: int | None = attrs.field(default=None, converter=_max_concurrency)
    # The handler's time limit (None: none); see execution/watchdog.py.
    timeout: dt.timedelta | None = attrs.field(default=None, converter=_timeout)

    def __attrs_post_init__(self) -> None:
        if self.max_debounce < self.debounce:
            raise ConfigError("max_debounce", self.max_debounce, "shorter than debounce")
        if self.recheck_interval is not None and self.filter is None:
            raise ConfigError(
                "recheck_interval", self.recheck_interval, "needs a filter to re-evaluate"
            )

    @property
    def tasks_collection(self) -> str:
        """Where this task's records live."""
        return tasks_collection_of(self.collection)

    @property
    def debounce_ms(self) -> int:
        """The debounce in the unit of MongoDB date arithmetic."""
        return to_milliseconds(self.debounce)

    @property
    def max_debounce_ms(self) -> int:
        """The longest a pending run can be pushed back by further changes."""
        return to_milliseconds(self.max_debounce)


_OPTIONS: Final = ("task", "collection", "handler", *option_names(TaskOptions))


def build_definition(options: Mapping[str, Any]) -> TaskDefinition:
    """A ``TaskDefinition`` from ``register``'s keyword arguments, or ``ConfigError``
    (the definition's fields check the values; an option given as ``None`` takes its
    default)."""
    check_unknown(options, _OPTIONS, "register()")
    for required in ("task", "collection", "handler"):
        if options.get(required) is None:
            raise ConfigError(required, None, "required")
    given = {key: value for key, value in options.items() if value is not None}
    return TaskDefinition(name=given.pop("task"), **given)
