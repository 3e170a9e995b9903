"""Options of ``init`` / ``ReactiveTasks(...)``, validated and converted once."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
from bson import ObjectId

from ..errors import ConfigError
from ..options import InitOptions, option_names
from ._validate import (
    as_callable,
    as_int,
    as_mapping,
    as_name,
    bool_field,
    check_unknown,
    choice_field,
    duration_field,
    field_names,
)
from .durations import parse_duration
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


@attrs.frozen(kw_only=True)
class Settings:
    """One instance's configuration. Durations are ``timedelta``s."""

    uri: str | None = attrs.field(
        default=None, repr=lambda uri: repr(redact_uri(uri)) if uri else repr(uri)
    )
    client: MongoClient[dict[str, Any]] | None = None
    database: str | None = None
    instance_id: str = attrs.field(factory=lambda: str(ObjectId()))
    concurrency: int = 5
    # Most records claimed ahead of free worker threads (0: none); used only while
    # handlers are short enough that a record claimed ahead soon gets a thread.
    prefetch: int = 32
    globals_collection: str = "_mongoreact_globals"
    task_filter: Callable[[TaskInfo], bool] | None = None
    task_caller: Callable[[Callable[[], None]], object] | None = None
    monitoring: MonitoringOptions = MonitoringOptions()
    cleanup_interval: Schedule = Schedule(interval=dt.timedelta(hours=24))
    # Tuning; the defaults suit production. Tests shorten them.
    leader_ttl: dt.timedelta = dt.timedelta(seconds=30)
    leader_heartbeat: dt.timedelta = dt.timedelta(seconds=10)
    task_lease: dt.timedelta = dt.timedelta(seconds=60)
    poll_min: dt.timedelta = dt.timedelta(milliseconds=200)
    poll_max: dt.timedelta = dt.timedelta(seconds=10)
    batch_window: dt.timedelta = dt.timedelta(milliseconds=50)
    batch_max_wait: dt.timedelta = dt.timedelta(milliseconds=500)
    batch_size: int = 1000


_DURATIONS: Final = (
    "leader_ttl", "leader_heartbeat", "task_lease", "poll_min", "poll_max", "batch_window",
    "batch_max_wait",
)  # fmt: skip
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
    """``Settings`` from ``init``'s keyword arguments, or ``ConfigError``."""
    if _command_line or _default_uri:
        given = dict(options)
        if "uri" in _command_line:
            given.pop("client", None)
        if _default_uri and given.get("uri") is None and given.get("client") is None:
            given["uri"] = _default_uri[0]
        options = {**given, **_command_line}
    check_unknown(options, _OPTIONS, "init()")
    fields: dict[str, Any] = {}
    uri, client = options.get("uri"), options.get("client")
    if uri is None and client is None:
        # The environment is the fallback everywhere: a worker module imported by a
        # shell, a test or a web process connects as under ``mongoreact run``.
        uri = os.environ.get(URI_VARIABLE) or None
        if uri is None:
            raise ConfigError("uri", None, f"give uri= or client=, or set ${URI_VARIABLE}")
    if uri is not None and client is not None:
        raise ConfigError("uri", "<redacted>", "give exactly one of uri= or client=")
    if uri is not None:
        if not isinstance(uri, str) or not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("uri", "<redacted>", "expected a mongodb:// or mongodb+srv:// URI")
        fields["uri"] = uri
    else:
        from pymongo import MongoClient

        if not isinstance(client, MongoClient):
            raise ConfigError("client", client, "expected a pymongo.MongoClient")
        fields["client"] = client
    if options.get("database") is not None:
        fields["database"] = as_name(options["database"], "database", dots=False)
    if options.get("instance_id") is not None:
        instance_id = options["instance_id"]
        if not isinstance(instance_id, str) or not instance_id:
            raise ConfigError("instance_id", instance_id, "expected a non-empty string")
        fields["instance_id"] = instance_id
    if "concurrency" in options:
        fields["concurrency"] = as_int(options["concurrency"], "concurrency", minimum=0)
    if "prefetch" in options:
        fields["prefetch"] = as_int(options["prefetch"], "prefetch", minimum=0)
    if "globals_collection" in options:
        fields["globals_collection"] = as_name(options["globals_collection"], "globals_collection")
    for hook in ("task_filter", "task_caller"):
        if options.get(hook) is not None:
            fields[hook] = as_callable(options[hook], hook)
    if options.get("monitoring") is not None:
        fields["monitoring"] = parse_monitoring(options["monitoring"])
    if options.get("cleanup_interval") is not None:
        fields["cleanup_interval"] = Schedule.parse(options["cleanup_interval"], "cleanup_interval")
    for name in _DURATIONS:
        if options.get(name) is not None:
            fields[name] = parse_duration(options[name], name)
    if "batch_size" in options:
        fields["batch_size"] = as_int(options["batch_size"], "batch_size", minimum=1)
    settings = Settings(**fields)
    _check_consistency(settings, options)
    return settings


def _check_consistency(settings: Settings, options: Mapping[str, Any]) -> None:
    def positive(name: str) -> None:
        if getattr(settings, name) <= dt.timedelta(0):
            raise ConfigError(name, options.get(name), "must be greater than zero")

    for name in ("leader_ttl", "leader_heartbeat", "task_lease", "poll_min", "poll_max"):
        positive(name)
    if settings.leader_heartbeat >= settings.leader_ttl:
        raise ConfigError(
            "leader_heartbeat", options.get("leader_heartbeat"), "must be shorter than leader_ttl"
        )
    if settings.poll_min > settings.poll_max:
        raise ConfigError("poll_min", options.get("poll_min"), "greater than poll_max")
    if settings.batch_window > settings.batch_max_wait:
        raise ConfigError("batch_window", options.get("batch_window"), "longer than batch_max_wait")


def parse_monitoring(value: object) -> MonitoringOptions:
    """The ``monitoring`` option from a dict, a bool or ``MonitoringOptions``."""
    if isinstance(value, MonitoringOptions):
        return value
    if isinstance(value, bool):
        return MonitoringOptions(enabled=value)
    return MonitoringOptions(**as_mapping(value, "monitoring", field_names(MonitoringOptions)))
