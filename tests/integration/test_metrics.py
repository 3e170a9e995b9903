"""Prometheus metrics: names and labels of the spec, cluster and local scrape modes."""

from __future__ import annotations

import datetime as dt

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pymongo.database import Database

from mongoreact import ReactiveTasks, TaskContext

from .conftest import EngineFactory
from .helpers import Doc, Recorder, start, wait_until

FAST_PUSH = {"enabled": True, "push_interval": "200ms"}


def samples(engine: ReactiveTasks) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = engine.prometheus_registry()
    assert registry is not None
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def flaky(ctx: TaskContext) -> None:
    if ctx.doc_id == "bad":
        raise RuntimeError("down")


def worker(make_engine: EngineFactory, db: Database[Doc], **options: object) -> ReactiveTasks:
    engine = make_engine(**options)
    engine.register(
        task="sync", collection="orders", handler=flaky, debounce=0,
        retry_policy={"type": "fixed", "interval": "1h", "max_attempts": 3},
    )  # fmt: skip
    return engine


def test_the_spec_metrics_are_reported(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = start(worker(make_engine, db, monitoring=FAST_PUSH), db)
    db.orders.insert_many([{"_id": "ok"}, {"_id": "bad"}, {"_id": "ok2"}])
    wait_until(lambda: db.orders_tasks.count_documents({"lastFinalizedAt": {"$exists": 1}}) == 3)
    found = samples(engine)
    assert value(found, "reactive_tasks_duration_seconds_count", task_name="sync",
                 status="completed") == 2  # fmt: skip
    assert value(found, "reactive_tasks_duration_seconds_count", task_name="sync",
                 status="failed") == 1  # fmt: skip
    assert value(found, "reactive_tasks_duration_seconds_bucket", task_name="sync",
                 status="completed", le="+Inf") == 2  # fmt: skip
    assert value(found, "reactive_tasks_retries_total", task_name="sync") == 1
    assert value(found, "reactive_tasks_queue_depth", task_name="sync", status="pending") == 1
    lag = value(found, "reactive_tasks_global_lag_seconds", task_name="sync")
    assert lag is not None and lag >= 0
    assert value(found, "reactive_tasks_change_stream_lag_seconds") is not None
    reconciled = value(found, "reactive_tasks_last_reconciliation_timestamp_seconds")
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    assert reconciled is not None and now - 120 < reconciled <= now + 5
    assert value(found, "reactive_tasks_leader_elections_total") == 1


def test_cluster_mode_sums_what_every_instance_pushes(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    runner = start(worker(make_engine, db, instance_id="runner", monitoring=FAST_PUSH), db)
    # An instance that runs nothing (e.g. a web process) scrapes for the cluster.
    scraper = make_engine(instance_id="web", concurrency=0, monitoring=FAST_PUSH)
    scraper.register(task="other", collection="misc", handler=Recorder())
    scraper.start()
    db.orders.insert_many([{"_id": f"o{i}"} for i in range(4)])
    wait_until(lambda: value(samples(scraper), "reactive_tasks_duration_seconds_count",
                             task_name="sync", status="completed") == 4)  # fmt: skip
    # A stale instance (not heard from for three push intervals) drops out.
    stale = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    db["_mongoreact_globals"].insert_one({
        "_id": "metrics:ghost", "instanceId": "ghost", "seenAt": stale,
        "measurements": runner.measurements.snapshot(),
    })  # fmt: skip
    assert value(samples(scraper), "reactive_tasks_duration_seconds_count",
                 task_name="sync", status="completed") == 4  # fmt: skip


def test_local_mode_reports_queue_figures_only_on_the_leader(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    local = {"enabled": True, "scrape_mode": "local"}
    leader = start(worker(make_engine, db, instance_id="lead", monitoring=local), db)
    follower = worker(make_engine, db, instance_id="follow", monitoring=local)
    follower.start()
    db.orders.insert_one({"_id": "bad"})
    wait_until(lambda: db.orders_tasks.count_documents({"status": "pending", "attempts": 1}) == 1)
    assert leader.is_leader and not follower.is_leader
    assert value(samples(leader), "reactive_tasks_queue_depth", task_name="sync",
                 status="pending") == 1  # fmt: skip
    assert not any(name == "reactive_tasks_queue_depth" for name, _ in samples(follower))


def test_no_registry_when_monitoring_is_off(make_engine: EngineFactory) -> None:
    assert make_engine(monitoring=False).prometheus_registry() is None


def test_a_process_that_never_started_reports_the_cluster(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # A web process serving /metrics: no tasks of its own, never started.
    running = start(worker(make_engine, db, monitoring=FAST_PUSH, instance_id="w1"), db)
    db.orders.insert_many([{"_id": "ok"}, {"_id": "ok2"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "completed"}) == 2)
    web = make_engine(monitoring=FAST_PUSH)

    def reported() -> float | None:
        return value(samples(web), "reactive_tasks_duration_seconds_count", task_name="sync",
                     status="completed")  # fmt: skip

    wait_until(lambda: reported() == 2, message="the worker's pushed figures")
    found = samples(web)
    # Every queued status of every known task is a series, 0 when empty.
    for status in ("pending", "processing", "processing_dirty", "failed"):
        assert value(found, "reactive_tasks_queue_depth", task_name="sync", status=status) == 0
    assert not web.is_running and running.is_running
