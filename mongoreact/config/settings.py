"""Options of ``init`` / ``ReactiveTasks(...)``, validated and converted once."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
from bson import ObjectId

from ..errors import ConfigError
from ._validate import (
    as_callable,
    as_mapping,
    as_name,
    bool_field,
    check_unknown,
    choice_field,
    duration_field,
    field_names,
    int_field,
)
from .options import InitOptions, option_names
from .schedule import Schedule
from .uri import redact_uri

if TYPE_CHECKING:
    from pymongo import MongoClient

    from ..records import TaskInfo

URI_VARIABLE: Final = "MONGOREACT_URI"
SCRAPE_MODES: Final = ("cluster", "local")
READ_PREFERENCES: Final = (
    "primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest",
)  # fmt: skip


@attrs.frozen(kw_only=True)
class MonitoringOptions:
    """The ``monitoring`` option. Checked however it is built: ``ConfigError`` names the
    option and the value."""

    enabled: bool = bool_field("monitoring.enabled", True)
    push_interval: dt.timedelta = duration_field(
        "monitoring.push_interval", dt.timedelta(minutes=1), positive=True
    )
    scrape_mode: str = choice_field("monitoring.scrape_mode", SCRAPE_MODES, "cluster")
    read_preference: str = choice_field(
        "monitoring.read_preference", READ_PREFERENCES, "secondaryPreferred"
    )


def parse_monitoring(value: object) -> MonitoringOptions:
    """The ``monitoring`` option from a dict, a bool or ``MonitoringOptions``."""
    if isinstance(value, MonitoringOptions):
        return value
    if isinstance(value, bool):
        return MonitoringOptions(enabled=value)
    return MonitoringOptions(**as_mapping(value, "monitoring", field_names(MonitoringOptions)))


def _client(_: Any, __: Any, value: Any) -> None:
    if value is None:
        return
    from pymongo import MongoClient

    if not isinstance(value, MongoClient):
        raise ConfigError("client", value, "expected a pymongo.MongoClient")


def _uri(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("uri", "<redacted>", "expected a mongodb:// or mongodb+srv:// URI")
    return value


def _uri_from_environment(settings: Settings) -> str | None:
    # The environment is the fallback everywhere: a worker module imported by a shell,
    # a test or a web process connects as under ``mongoreact run``.
    return None if settings.client is not None else os.environ.get(URI_VARIABLE) or None


def _database(value: object) -> str | None:
    return None if value is None else as_name(value, "database", dots=False)


def _instance_id(_: object, __: object, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError("instance_id", value, "expected a non-empty string")


def _globals_collection(value: object) -> str:
    return as_name(value, "globals_collection")


def _task_filter(_: Any, __: Any, value: Any) -> None:
    if value is not None:
        as_callable(value, "task_filter")


def _task_caller(_: Any, __: Any, value: Any) -> None:
    if value is not None:
        as_callable(value, "task_caller")


def _cleanup_interval(value: object) -> Schedule:
    return Schedule.parse(value, "cleanup_interval")


@attrs.frozen(kw_only=True)
class Settings:
    """One instance's configuration. Durations are ``timedelta``s.

    Every field converts and checks its value, however the settings are built
    (``init``'s keyword arguments, or this class directly): ``ConfigError`` names the
    option and the value. The URI falls back to ``$MONGOREACT_URI``."""

    client: MongoClient[dict[str, Any]] | None = attrs.field(default=None, validator=_client)
    uri: str | None = attrs.field(
        default=attrs.Factory(_uri_from_environment, takes_self=True),
        converter=_uri,
        repr=lambda uri: repr(redact_uri(uri)) if uri else repr(uri),
    )
    database: str | None = attrs.field(default=None, converter=_database)
    instance_id: str = attrs.field(factory=lambda: str(ObjectId()), validator=_instance_id)
    concurrency: int = int_field("concurrency", 5, minimum=0)
    # Most records claimed ahead of free worker threads (0: none); used only while
    # handlers are short enough that a record claimed ahead soon gets a thread.
    prefetch: int = int_field("prefetch", 32, minimum=0)
    globals_collection: str = attrs.field(
        default="_mongoreact_globals", converter=_globals_collection
    )
    task_filter: Callable[[TaskInfo], bool] | None = attrs.field(
        default=None, validator=_task_filter
    )
    task_caller: Callable[[Callable[[], None]], object] | None = attrs.field(
        default=None, validator=_task_caller
    )
    monitoring: MonitoringOptions = attrs.field(
        factory=MonitoringOptions, converter=parse_monitoring
    )
    cleanup_interval: Schedule = attrs.field(
        default=Schedule(interval=dt.timedelta(hours=24)), converter=_cleanup_interval
    )
    # Tuning; the defaults suit production. Tests shorten them.
    leader_ttl: dt.timedelta = duration_field("leader_ttl", dt.timedelta(seconds=30), positive=True)
    leader_heartbeat: dt.timedelta = duration_field(
        "leader_heartbeat", dt.timedelta(seconds=10), positive=True
    )
    task_lease: dt.timedelta = duration_field("task_lease", dt.timedelta(seconds=60), positive=True)
    poll_min: dt.timedelta = duration_field(
        "poll_min", dt.timedelta(milliseconds=200), positive=True
    )
    poll_max: dt.timedelta = duration_field("poll_max", dt.timedelta(seconds=10), positive=True)
    batch_window: dt.timedelta = duration_field("batch_window", dt.timedelta(milliseconds=50))
    batch_max_wait: dt.timedelta = duration_field("batch_max_wait", dt.timedelta(milliseconds=500))
    batch_size: int = int_field("batch_size", 1000, minimum=1)

    def __attrs_post_init__(self) -> None:
        if self.uri is None and self.client is None:
            raise ConfigError("uri", None, f"give uri= or client=, or set ${URI_VARIABLE}")
        if self.uri is not None and self.client is not None:
            raise ConfigError("uri", "<redacted>", "give exactly one of uri= or client=")
        if self.leader_heartbeat >= self.leader_ttl:
            raise ConfigError(
                "leader_heartbeat", self.leader_heartbeat, "must be shorter than leader_ttl"
            )
        if self.poll_min > self.poll_max:
            raise ConfigError("poll_min", self.poll_min, "greater than poll_max")
        if self.batch_window > self.batch_max_wait:
            raise ConfigError("batch_window", self.batch_window, "longer than batch_max_wait")


_OPTIONS: Final = option_names(InitOptions)


# Options the ``mongoreact run`` command was given: they win over those the user's
# module passes, in the one process that command runs (set once, before the import);
# the URI of ``$MONGOREACT_URI`` is only a default, for a module that names none.
_command_line: dict[str, Any] = {}
_default_uri: list[str] = []


def override_from_command_line(options: Mapping[str, Any], default_uri: str | None) -> None:
    """Make ``options`` win over every ``init`` / ``ReactiveTasks`` call in this
    process (``mongoreact run``'s ``--uri``, ``--concurrency``, ...), and use
    ``default_uri`` where a call gives neither ``uri`` nor ``client``."""
    _command_line.clear()
    _command_line.update(options)
    _default_uri[:] = [default_uri] if default_uri else []


def build_settings(options: Mapping[str, Any]) -> Settings:
    """``Settings`` from ``init``'s keyword arguments, or ``ConfigError`` (the
    settings' fields check the values; an option given as ``None`` takes its default)."""
    if _command_line or _default_uri:
        given = dict(options)
        if "uri" in _command_line:
            given.pop("client", None)
        if _default_uri and given.get("uri") is None and given.get("client") is None:
            given["uri"] = _default_uri[0]
        options = {**given, **_command_line}
    check_unknown(options, _OPTIONS, "init()")
    return Settings(**{key: value for key, value in options.items() if value is not None})
