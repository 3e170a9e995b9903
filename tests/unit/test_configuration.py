"""Every bad option of init() and register() is a ConfigError naming option and value,
raised at call time with no I/O."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import pytest

from mongoreact import (
    CleanupPolicy,
    ConfigError,
    Evolution,
    MonitoringOptions,
    ReactiveTasks,
    RetryPolicy,
    TaskDefinition,
)
from mongoreact.config.retry import (
    CronRetry,
    ExponentialRetry,
    FixedRetry,
    SeriesRetry,
)
from mongoreact.config.schedule import Schedule
from mongoreact.management import TaskQuery

URI = "mongodb://127.0.0.1:1/app"  # never contacted: validation does no I/O


def handler(ctx: Any) -> None:
    """A handler that does nothing."""


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"colour": "blue"}, "colour"),
        ({"uri": None}, "uri"),
        ({"uri": "http://x"}, "uri"),
        ({"client": "not a client", "uri": None}, "client"),
        ({"database": "a.b"}, "database"),
        ({"database": ""}, "database"),
        ({"instance_id": 5}, "instance_id"),
        ({"concurrency": -1}, "concurrency"),
        ({"concurrency": "5"}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"prefetch": -1}, "prefetch"),
        ({"prefetch": 2.5}, "prefetch"),
        ({"globals_collection": "a$b"}, "globals_collection"),
        ({"task_filter": "all"}, "task_filter"),
        ({"task_caller": 3}, "task_caller"),
        ({"monitoring": {"enabled": "yes"}}, "monitoring.enabled"),
        ({"monitoring": {"scrape_mode": "global"}}, "monitoring.scrape_mode"),
        ({"monitoring": {"push_interval": "often"}}, "monitoring.push_interval"),
        ({"monitoring": {"read_preference": "any"}}, "monitoring.read_preference"),
        ({"monitoring": {"pushIntervalMs": 5}}, "monitoring.pushIntervalMs"),
        ({"cleanup_interval": "CRON not a cron"}, "cleanup_interval"),
        ({"cleanup_interval": "-1h"}, "cleanup_interval"),
        ({"cleanup_interval": 0}, "cleanup_interval"),
        ({"leader_ttl": "10s", "leader_heartbeat": "10s"}, "leader_heartbeat"),
        ({"task_lease": 0}, "task_lease"),
        ({"poll_min": "20s", "poll_max": "10s"}, "poll_min"),
        ({"batch_window": "1s", "batch_max_wait": "500ms"}, "batch_window"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_init_options(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ReactiveTasks(**{"uri": URI, **options})
    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}=")


def test_a_bad_uri_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        ReactiveTasks(uri="postgres://user:secret@host/db")
    assert "secret" not in str(caught.value)


def test_good_init_options_are_converted() -> None:
    engine = ReactiveTasks(
        uri=URI, concurrency=0, cleanup_interval="CRON 0 3 * * *", monitoring=False,
        leader_ttl="1m", task_lease=dt.timedelta(seconds=5), poll_min=10,
    )  # fmt: skip
    settings = engine.settings
    assert settings.cleanup_interval.description == "CRON 0 3 * * *"
    assert settings.monitoring.enabled is False
    assert settings.leader_ttl == dt.timedelta(minutes=1)
    assert settings.task_lease == dt.timedelta(seconds=5)
    assert settings.poll_min == dt.timedelta(milliseconds=10)
    assert len(settings.instance_id) == 24  # an ObjectId hex by default


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"task": None}, "task"),
        ({"task": ""}, "task"),
        ({"task": 3}, "task"),
        ({"collection": None}, "collection"),
        ({"collection": "orders_tasks"}, "collection"),
        ({"collection": "system.views"}, "collection"),
        ({"collection": "a$b"}, "collection"),
        ({"handler": None}, "handler"),
        ({"handler": "send_email"}, "handler"),
        ({"filter": "status == 'paid'"}, "filter"),
        ({"filter": {"$where": "1"}}, "filter"),
        ({"watch_projection": {"status": 0}}, "watch_projection"),
        ({"debounce": "-1s"}, "debounce"),
        ({"debounce": "soon"}, "debounce"),
        ({"debounce": "10s", "max_debounce": "1s"}, "max_debounce"),
        ({"retry_policy": {"type": "never"}}, "retry_policy.type"),
        ({"cleanup_policy": {"delete_when": "always"}}, "cleanup_policy.delete_when"),
        ({"cleanup_policy": {"keep_for": "forever"}}, "cleanup_policy.keep_for"),
        ({"cleanup_policy": {"deleteWhen": "never"}}, "cleanup_policy.deleteWhen"),
        ({"execution_history_limit": -1}, "execution_history_limit"),
        ({"execution_history_limit": 2.5}, "execution_history_limit"),
        ({"execution_history_limit": 10**9}, "execution_history_limit"),
        ({"debounce": "10"}, "debounce"),
        ({"handler": lambda: None}, "handler"),
        ({"handler": lambda ctx, extra: None}, "handler"),
        ({"evolution": {"handler_version": 0}}, "evolution.handler_version"),
        ({"evolution": {"on_handler_version_change": "all"}},
         "evolution.on_handler_version_change"),
        ({"evolution": {"reconcile_on_trigger_change": 1}},
         "evolution.reconcile_on_trigger_change"),
        ({"priority": 1}, "priority"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": "2"}, "max_concurrency"),
        ({"filter": {"a": 1}, "recheck_interval": "0s"}, "recheck_interval"),
        ({"filter": {"a": 1}, "recheck_interval": "often"}, "recheck_interval"),
        ({"recheck_interval": "1m"}, "recheck_interval"),
    ],
)  # fmt: skip
def test_bad_register_options(options: dict[str, Any], option: str) -> None:
    engine = ReactiveTasks(uri=URI)
    arguments = {"task": "t", "collection": "orders", "handler": handler, **options}
    with pytest.raises(ConfigError) as caught:
        engine.register(**arguments)
    assert caught.value.option == option


def test_duplicate_task_names_are_refused() -> None:
    engine = ReactiveTasks(uri=URI)
    engine.register(task="t", collection="orders", handler=handler)
    with pytest.raises(ConfigError, match="already registered") as caught:
        engine.register(task="t", collection="users", handler=handler)
    assert caught.value.value == "t"


def test_register_converts_and_defaults() -> None:
    engine = ReactiveTasks(uri=URI)
    definition = engine.register(
        task="t", collection="fs.files", handler=handler, debounce="2s",
        filter={"$eq": ["$a", 1]}, evolution={"handler_version": 3},
    )  # fmt: skip
    assert definition.debounce == dt.timedelta(seconds=2)
    assert definition.max_debounce == dt.timedelta(seconds=20)  # 10x the debounce
    assert definition.filter == {"$expr": {"$eq": ["$a", 1]}}
    assert definition.tasks_collection == "fs.files_tasks"
    assert definition.retry_policy.type == "exponential"
    assert definition.cleanup_policy.delete_when == "sourceDocumentDeleted"
    assert definition.cleanup_policy.keep_for == dt.timedelta(hours=24)
    assert definition.evolution.handler_version == 3
    assert definition.execution_history_limit == 5


def test_the_decorator_registers_and_returns_the_function() -> None:
    engine = ReactiveTasks(uri=URI)

    @engine.task(collection="orders", debounce=0)
    def sync_order(ctx: Any) -> None:
        """Sync an order."""

    assert callable(sync_order)
    assert [d.name for d in engine.definitions] == ["sync_order"]


# Option objects built directly are checked as strictly as the dicts they replace: the
# error names the option and the value, at construction (never later, in a thread).
@pytest.mark.parametrize(
    ("cls", "kwargs", "option"),
    [
        (RetryPolicy, {"type": "series"}, "retry_policy.intervals"),
        (RetryPolicy, {"type": "weekly"}, "retry_policy.type"),
        (RetryPolicy, {"type": "cron", "expression": "every day"}, "retry_policy.expression"),
        (RetryPolicy, {"type": "fixed", "max_attempts": 0}, "retry_policy.max_attempts"),
        (RetryPolicy, {"type": "fixed", "jitter": 2}, "retry_policy.jitter"),
        (RetryPolicy, {"type": "exponential", "factor": 0.5}, "retry_policy.factor"),
        (RetryPolicy, {"type": "exponential", "min": "2h", "max": "1h"}, "retry_policy.min"),
        (RetryPolicy, {"type": "fixed", "interval": "soon"}, "retry_policy.interval"),
        (RetryPolicy, {"type": "series", "intervals": ["1s", -5]}, "retry_policy.intervals[1]"),
        (RetryPolicy, {"type": "fixed", "factor": 3}, "retry_policy.factor"),
        (FixedRetry, {"intervals": ["1s"]}, "retry_policy.intervals"),
        (FixedRetry, {"type": "linear"}, "retry_policy.type"),
        (SeriesRetry, {}, "retry_policy.intervals"),
        (CronRetry, {}, "retry_policy.expression"),
        (ExponentialRetry, {"max": "1s"}, "retry_policy.min"),
        (CleanupPolicy, {"delete_when": "bogus"}, "cleanup_policy.delete_when"),
        (CleanupPolicy, {"keep_for": -1}, "cleanup_policy.keep_for"),
        (Evolution, {"handler_version": 0}, "evolution.handler_version"),
        (Evolution, {"on_handler_version_change": "all"}, "evolution.on_handler_version_change"),
        (MonitoringOptions, {"push_interval": 0}, "monitoring.push_interval"),
        (MonitoringOptions, {"push_interval": "often"}, "monitoring.push_interval"),
        (MonitoringOptions, {"scrape_mode": "global"}, "monitoring.scrape_mode"),
        (MonitoringOptions, {"enabled": "yes"}, "monitoring.enabled"),
        # Regression (issue 26): Schedule and TaskQuery were checked only by their parsers.
        (Schedule, {}, "schedule"),
        (Schedule, {"cron": "1 2", "interval": "1h"}, "cron"),
        (Schedule, {"cron": "* * * * *", "interval": "1h"}, "schedule"),
        (Schedule, {"interval": 0}, "interval"),
        (Schedule, {"interval": "soon"}, "interval"),
        (Schedule, {"function": "daily"}, "function"),
        (TaskQuery, {"statuses": ["done"]}, "status"),
        (TaskQuery, {"statuses": 3}, "status"),
        (TaskQuery, {"task": ""}, "task"),
        (TaskQuery, {"error": 3}, "error"),
        (TaskQuery, {"source_doc_filter": {"$where": "true"}}, "source_doc_filter"),
    ],
)
def test_option_objects_built_directly_are_checked(
    cls: type, kwargs: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        cls(**kwargs)
    assert caught.value.option == option


def test_option_objects_convert_durations_as_their_dicts_do() -> None:
    given: dict[str, Any] = {"push_interval": 5}
    assert MonitoringOptions(**given).push_interval == dt.timedelta(milliseconds=5)
    given = {"keep_for": "2h"}
    assert CleanupPolicy(**given).keep_for == dt.timedelta(hours=2)
    given = {"type": "series", "intervals": ["1s", 2000]}
    policy = RetryPolicy(**given)
    assert isinstance(policy, SeriesRetry)
    assert policy.intervals == (dt.timedelta(seconds=1), dt.timedelta(seconds=2))
    assert SeriesRetry(intervals=[1000, "2s"]) == policy
    engine = ReactiveTasks(uri=URI)
    fixed: dict[str, Any] = {"type": "fixed", "interval": "1s"}
    engine.register(task="t", collection="c", handler=handler, retry_policy=RetryPolicy(**fixed))


def test_retry_policy_objects_and_dicts_agree() -> None:
    """Regression: RetryPolicy(type="fixed") took a 10 s interval the dict form refused,
    and with max_duration the object kept 5 attempts where the dict retried until the
    time limit (the spec's rule)."""
    with pytest.raises(ConfigError, match=r"retry_policy\.interval"):
        RetryPolicy(type="fixed")
    with pytest.raises(ConfigError, match=r"retry_policy\.interval"):
        FixedRetry()
    dict_form = ReactiveTasks(uri=URI).register(
        task="t", collection="c", handler=handler,
        retry_policy={"type": "fixed", "interval": 200, "max_duration": "3s"},
    )  # fmt: skip
    limits: dict[str, Any] = {"interval": 200, "max_duration": "3s"}
    objects = [RetryPolicy(type="fixed", **limits), FixedRetry(**limits)]
    assert all(p.max_attempts == -1 for p in objects)
    assert all(p == dict_form.retry_policy for p in objects)
    assert FixedRetry(interval=dt.timedelta(seconds=1)).max_attempts == 5


async def async_handler(ctx: Any) -> None:
    """What a user of an async framework writes first."""


class AsyncCallable:
    async def __call__(self, ctx: Any) -> None:
        """An object whose call is a coroutine."""


@pytest.mark.parametrize("bad", [async_handler, AsyncCallable(), functools.partial(async_handler)])
def test_async_handlers_are_refused_at_register_and_cron_task(bad: Any) -> None:
    """Regression: an async handler's record became completed with its body never run
    (only a "coroutine was never awaited" warning said so)."""
    engine = ReactiveTasks(uri=URI)
    with pytest.raises(ConfigError, match="async") as caught:
        engine.register(task="t", collection="c", handler=bad)
    assert caught.value.option == "handler"
    with pytest.raises(ConfigError, match="async"):
        engine.cron_task("c", "1h", functools.partial(bad, None))


def test_handler_signatures_are_checked() -> None:
    engine = ReactiveTasks(uri=URI)
    good: list[Any] = [
        lambda ctx, retries=3: None, lambda *args: None,
        functools.partial(lambda x, ctx: None, 1), print,
    ]  # fmt: skip
    for number, handler in enumerate(good):
        engine.register(task=f"t{number}", collection="c", handler=handler)
    no_arguments: Any = lambda: None  # noqa: E731
    one_argument: Any = lambda ctx: None  # noqa: E731
    with pytest.raises(ConfigError, match=r"called with \(ctx\)"):
        engine.register(task="x", collection="c", handler=no_arguments)
    engine.cron_task("ok", "1h", no_arguments)
    with pytest.raises(ConfigError, match="called with no arguments"):
        engine.cron_task("bad", "1h", one_argument)


def test_the_uri_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a worker module calling ``init()`` could only be imported under
    ``mongoreact run`` (which reads ``$MONGOREACT_URI``)."""
    monkeypatch.setenv("MONGOREACT_URI", "mongodb://envhost:27017/fromenv")
    assert ReactiveTasks().settings.uri == "mongodb://envhost:27017/fromenv"
    assert ReactiveTasks(uri=URI).settings.uri == URI  # an explicit one wins
    monkeypatch.delenv("MONGOREACT_URI")
    with pytest.raises(ConfigError, match="MONGOREACT_URI"):
        ReactiveTasks()


def test_no_secret_in_the_settings_repr() -> None:
    uri = "mongodb://ops:s3@cr:3t@h1,h2/app?tlsCertificateKeyFilePassword=kp99&w=majority"
    shown = repr(ReactiveTasks(uri=uri).settings)
    assert "s3" not in shown and "cr:3t" not in shown and "kp99" not in shown
    assert "ops:***@h1,h2/app" in shown and "w=majority" in shown


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({"handler": 1}, "handler"),
        ({"debounce": -1}, "debounce"),
        ({"execution_history_limit": -3}, "execution_history_limit"),
        ({"collection": "orders_tasks"}, "collection"),
        ({"name": ""}, "task"),
        ({"filter": "x"}, "filter"),
        ({"debounce": "10s", "max_debounce": "1s"}, "max_debounce"),
        ({"recheck_interval": "1m"}, "recheck_interval"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_task_definitions_check_themselves_however_built(
    fields: dict[str, Any], option: str
) -> None:
    """Regression (issue 26): the exported TaskDefinition accepted anything; its fields
    now validate and convert, so register() and the class agree."""
    base: dict[str, Any] = {"name": "t", "collection": "orders", "handler": handler}
    with pytest.raises(ConfigError) as caught:
        TaskDefinition(**{**base, **fields})
    assert caught.value.option == option


def test_a_definition_built_directly_equals_the_registered_one() -> None:
    options: dict[str, Any] = {
        "collection": "orders", "handler": handler, "filter": {"status": "paid"},
        "watch_projection": {"status": 1}, "debounce": "2s", "retry_policy": {"type": "fixed",
        "interval": "1s"}, "timeout": "30s",
    }  # fmt: skip
    registered = ReactiveTasks(uri=URI).register(task="t", **options)
    assert TaskDefinition(name="t", **options) == registered
    assert registered.max_debounce == dt.timedelta(seconds=20)


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({"concurrency": -1}, "concurrency"),
        ({"uri": "http://x"}, "uri"),
        ({"leader_ttl": "1s", "leader_heartbeat": "2s"}, "leader_heartbeat"),
        ({"task_lease": 0}, "task_lease"),
        ({"task_filter": "all"}, "task_filter"),
        ({"monitoring": {"enabled": "yes"}}, "monitoring.enabled"),
        ({"cleanup_interval": "CRON nope"}, "cleanup_interval"),
        ({"client": "not a client"}, "client"),
        ({"instance_id": ""}, "instance_id"),
    ],
)
def test_settings_check_themselves_however_built(fields: dict[str, Any], option: str) -> None:
    """Regression (issue 26): the exported Settings accepted anything."""
    from mongoreact.config.settings import Settings

    given = {"uri": URI, **fields} if "client" not in fields else fields
    with pytest.raises(ConfigError) as caught:
        Settings(**given)
    assert caught.value.option == option


def test_settings_built_directly_equal_init_s() -> None:
    from mongoreact.config.settings import Settings

    options: dict[str, Any] = {"uri": URI, "concurrency": 2, "leader_ttl": "5s",
                               "leader_heartbeat": 1000, "instance_id": "i-1"}  # fmt: skip
    assert Settings(**options) == ReactiveTasks(**options).settings


@pytest.mark.parametrize(
    "options",
    [
        {"url": "mongodb://u:s3cr3t-pw@h/app"},  # a misspelled option
        {"uri": URI, "client": "mongodb://u:s3cr3t-pw@h/app"},
        {"database": "mongodb://u:s3cr3t-pw@h/app"},
    ],
)
def test_config_errors_never_echo_a_uri_with_credentials(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        ReactiveTasks(**options)
    assert "s3cr3t-pw" not in str(caught.value) and "s3cr3t-pw" not in repr(caught.value.value)


def test_a_spec_published_with_an_empty_filter_and_a_recheck_still_plans() -> None:
    """Review finding: older instances published recheckMs with filter "null"; the
    stricter definition refused it and the leader stopped planning that task."""
    from mongoreact.cluster.specs import definition_from_spec

    spec = {"task": "t", "collection": "orders", "filter": "null", "watchExpression": '"$$ROOT"',
            "debounceMs": 1000, "maxDebounceMs": 10000, "recheckMs": 60000}  # fmt: skip
    definition = definition_from_spec(spec)
    assert definition.filter is None and definition.recheck_interval is None
