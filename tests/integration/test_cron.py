"""Cron tasks: once per schedule across instances, run now, run log, bad schedules."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from mongoreact import ConfigError
from mongoreact.clock import ServerClock, utc_now
from mongoreact.cron import CronRunner, CronTask, build_cron_task
from mongoreact.store.cron import CronStore

from .conftest import EngineFactory
from .helpers import Doc, wait_until


def cron_doc(db: Database[Doc], name: str) -> Doc:
    return db["_mongoreact_cron"].find_one({"_id": name}) or {}


def test_an_interval_task_runs_once_per_interval_across_instances(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    runs: list[tuple[str, dt.datetime]] = []
    lock = threading.Lock()

    def report(instance: str) -> Any:
        def run() -> None:
            with lock:
                runs.append((instance, dt.datetime.now(dt.timezone.utc)))
            threading.Event().wait(0.05)

        return run

    engines = [make_engine(instance_id=f"i{i}") for i in range(3)]
    for i, engine in enumerate(engines):
        engine.cron_task("report", "300ms", report(f"i{i}"))
        engine.start()
    wait_until(lambda: len(runs) >= 6, timeout=15, message="six runs")
    times = sorted(at for _, at in runs)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # Never two runs for one slot: runs are one interval apart (after the previous end).
    assert min(gaps) >= 0.3, gaps
    log = cron_doc(db, "report")["runLog"]
    assert len(log) == 5 and log[0]["startedAt"] >= log[1]["startedAt"]


def test_cron_expressions_and_callables(make_engine: EngineFactory, db: Database[Doc]) -> None:
    cron_runs: list[dt.datetime] = []
    dynamic_runs: list[dt.datetime] = []
    engine = make_engine()
    engine.cron_task("every-second", "CRON */1 * * * * *",
                     lambda: cron_runs.append(dt.datetime.now(dt.timezone.utc)))  # fmt: skip
    engine.cron_task("dynamic", lambda now: now + dt.timedelta(milliseconds=200),
                     lambda: dynamic_runs.append(dt.datetime.now(dt.timezone.utc)))  # fmt: skip
    engine.start()
    wait_until(lambda: len(cron_runs) >= 2 and len(dynamic_runs) >= 3, timeout=15)
    assert cron_doc(db, "every-second")["schedule"] == "CRON */1 * * * * *"
    assert cron_doc(db, "dynamic")["schedule"].startswith("callable")


def test_run_now_and_the_run_log_keeps_errors(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    calls: list[int] = []

    def nightly() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("warehouse offline")

    engine = make_engine()
    engine.cron_task("nightly", "CRON 0 3 * * *", nightly)
    engine.start()
    engine.run_cron_task("nightly", timeout=10)
    assert calls == [1]
    first = cron_doc(db, "nightly")["runLog"][0]
    assert first["error"] == "RuntimeError: warehouse offline" and first["finishedAt"]
    engine.run_cron_task("nightly", timeout=10)
    assert calls == [1, 1]
    entry = cron_doc(db, "nightly")
    assert entry["runLog"][0]["error"] is None
    assert entry["nextRunAt"].hour == 3  # still on its schedule
    assert [t["_id"] for t in engine.cron_tasks()] == ["nightly"]


@pytest.mark.parametrize(
    ("name", "schedule", "option"),
    [
        ("", "1h", "name"),
        ("x", "CRON not cron", "schedule"),
        ("x", "-5m", "schedule"),
        ("x", 0, "schedule"),
        ("x", "sometimes", "schedule"),
    ],
)
def test_bad_cron_tasks_are_config_errors(
    make_engine: EngineFactory, name: str, schedule: object, option: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_engine().cron_task(name, schedule, lambda: None)
    assert caught.value.option == option


def test_duplicate_and_late_cron_tasks_are_refused(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.cron_task("x", "1h", lambda: None)
    with pytest.raises(ConfigError, match="already exists"):
        engine.cron_task("x", "2h", lambda: None)
    engine.start()
    with pytest.raises(ConfigError, match="before start"):
        engine.cron_task("y", "1h", lambda: None)


class _FindCounter(monitoring.CommandListener):
    """Counts the ``find`` commands one client sends to the cron collection."""

    def __init__(self) -> None:
        self.finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "_mongoreact_cron":
            self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Not needed."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Not needed."""


def test_an_instance_waits_while_another_runs_an_overdue_cron_task(
    make_engine: EngineFactory, mongo_uri: str, database_name: str
) -> None:
    # While one instance runs a due task, its nextRunAt stays in the past: the other
    # instance used to look again at once, spinning on the database for the whole run.
    running, release = threading.Event(), threading.Event()

    def slow() -> None:
        running.set()
        release.wait(10)

    def always_due(now: dt.datetime) -> dt.datetime:
        return now

    runner = make_engine(instance_id="runner")
    runner.cron_task("slow", always_due, slow)
    runner.start()
    wait_until(running.is_set, message="the run to start")
    counter = _FindCounter()
    client: MongoClient[Doc] = MongoClient(mongo_uri, event_listeners=[counter], tz_aware=True)
    try:
        waiter = make_engine(instance_id="waiter", client=client, uri=None)
        waiter.cron_task("slow", always_due, slow)
        waiter.start()
        threading.Event().wait(1.0)
        finds = counter.finds
    finally:
        release.set()
        client.close()
    # One look per poll_min (20 ms in tests) at most, not thousands.
    assert finds <= 1.0 / 0.02 + 5, finds


class _FlakyFinish(CronStore):
    """A cron store whose first ``finish`` reply is lost (a transient network error)."""

    failures = 1

    def finish(self, *args: Any, **kwargs: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise AutoReconnect("connection reset (injected)")
        return super().finish(*args, **kwargs)


def _runner(engine: Any, store: CronStore, task: CronTask, clock: ServerClock) -> CronRunner:
    return CronRunner(settings=engine.settings, store=store, tasks={task.name: task}, clock=clock)


def test_a_transient_error_at_a_cron_finish_is_retried(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: the finish was not retried; the run stayed open under its lease and
    ran again once the lease expired."""
    engine = make_engine()
    runs: list[int] = []
    task = build_cron_task("nightly", "1h", lambda: runs.append(1))
    store = _FlakyFinish(engine.database)
    runner = _runner(engine, store, task, ServerClock())
    runner.publish()
    store.request_run("nightly")
    runner.start()
    try:
        wait_until(lambda: (cron_doc(db, "nightly").get("runLog") or [{}])[0].get("finishedAt"))
    finally:
        runner.stop()
        runner.join(5)
    document = cron_doc(db, "nightly")
    assert runs == [1] and store.failures == 0
    assert document["lockedUntil"].replace(tzinfo=None) == dt.datetime(1970, 1, 1)


def test_a_host_clock_ahead_does_not_take_a_running_cron_lease(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: claims compared the lease with the host's estimate of the server's
    clock; a host 10 minutes ahead took a lease another instance was renewing."""
    engine = make_engine()
    task = build_cron_task("report", "1h", lambda: None)
    store = CronStore(engine.database)
    honest = _runner(engine, store, task, ServerClock())
    honest.publish()
    store.request_run("report")
    assert honest._claim() is not None  # now held for CRON_LEASE (5 minutes)
    store.request_run("report")
    ahead = ServerClock(local_now=lambda: utc_now() + dt.timedelta(minutes=10))
    assert _runner(engine, store, task, ahead)._claim() is None
