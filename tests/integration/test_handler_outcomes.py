"""What happens after a handler: completion, skips, retries, dead letters, dirty runs."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import pytest
from pymongo.database import Database

from mongoreact import ConfigError, TaskConditionFailedError, TaskContext

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, record_when, start, wait_until


def test_a_failing_handler_is_retried_then_fails_with_its_errors_kept(
    make_engine: EngineFactory, db: Database[Doc], caplog: pytest.LogCaptureFixture
) -> None:
    def handler(ctx: TaskContext) -> None:
        threading.Event().wait(0.03)  # a run that takes a measurable time
        raise ValueError(f"attempt {ctx.attempt} failed")

    engine = make_engine()
    engine.register(
        task="sync", collection="orders", handler=handler, debounce=0,
        retry_policy={"type": "fixed", "interval": 50, "max_attempts": 3},
        execution_history_limit=2,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    task_record = record_when(db, "orders", "o1", lambda r: r["status"] == "failed")
    assert task_record["attempts"] == 3
    assert task_record["lastError"] == "ValueError: attempt 3 failed"
    assert "Traceback" in task_record["lastErrorTraceback"]
    assert 'raise ValueError(f"attempt {ctx.attempt} failed")' in task_record["lastErrorTraceback"]
    assert task_record["nextRunAt"] is None  # out of the polling index: the dead-letter queue
    history = task_record["executionHistory"]
    assert [h["attempt"] for h in history] == [2, 3]  # limited to execution_history_limit
    assert all(h["status"] == "failed" and "Traceback" in h["traceback"] for h in history)
    # The traceback ends with the error itself; each run says how long it took (ms).
    assert task_record["lastErrorTraceback"].rstrip().endswith("ValueError: attempt 3 failed")
    assert history[-1]["traceback"].rstrip().endswith("ValueError: attempt 3 failed")
    assert all(isinstance(h["durationMs"], int) and 30 <= h["durationMs"] < 5000 for h in history)
    assert task_record["firstErrorAt"] is not None
    # Retried runs at WARNING, one line; the run given up at ERROR with its traceback
    # (docs/monitoring.md: ERROR is for what a human must look at).
    runs = [r for r in caplog.records if "task sync for 'o1' failed" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in runs] == [
        (logging.WARNING, False), (logging.WARNING, False), (logging.ERROR, True)
    ]  # fmt: skip


def test_the_default_retry_policy_is_exponential_from_ten_seconds(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    def handler(ctx: TaskContext) -> None:
        raise RuntimeError("down")

    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=handler, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    task_record = record_when(db, "orders", "o1", lambda r: r.get("lastError"))
    assert task_record["status"] == "pending"
    finalized = task_record["lastFinalizedAt"]
    delay = (task_record["nextRunAt"] - finalized).total_seconds()
    assert 9 <= delay <= 11, delay


def test_a_failed_condition_completes_the_task_without_a_failure(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Given a run planned while the order was paid
    gate = threading.Event()
    outcomes: list[str] = []

    def handler(ctx: TaskContext) -> None:
        gate.wait(10)
        try:
            ctx.get_document()
        except TaskConditionFailedError as error:
            outcomes.append(f"skipped {error.task} {error.doc_id}")
            raise
        outcomes.append("ran")

    engine = make_engine()
    engine.register(
        task="notify", collection="orders", handler=handler, filter={"status": "paid"},
        watch_projection={"status": 1}, debounce=0,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "status": "paid"})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "processing")
    # When the order stops matching before the handler reads it
    db.orders.update_one({"_id": "o1"}, {"$set": {"status": "refunded"}})
    wait_until(lambda: record(db, "orders", "o1").get("matched") is False)
    gate.set()
    # Then the run is skipped: completed, no error, no attempt counted as failed
    task_record = record_when(db, "orders", "o1", lambda r: r["status"] == "completed")
    assert outcomes == ["skipped notify o1"]  # the error names what was skipped
    assert task_record["lastError"] is None
    assert task_record["executionHistory"][-1]["status"] == "skipped"


def test_get_document_checks_the_watched_values_and_honours_projection_and_session(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    fetched: list[Doc] = []

    def handler(ctx: TaskContext) -> None:
        with engine.database.client.start_session() as session:
            fetched.append(ctx.get_document(projection={"email": 1}, session=session))

    engine = make_engine()
    engine.register(
        task="t", collection="users", handler=handler, watch_projection={"email": 1}, debounce=0
    )
    start(engine, db)
    db.users.insert_one({"_id": "u1", "email": "a@x", "name": "A"})
    wait_until(lambda: fetched)
    assert fetched == [{"_id": "u1", "email": "a@x"}]


def test_a_change_during_a_run_makes_it_dirty_and_runs_it_again(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    release = threading.Event()
    recorder = Recorder(action=lambda ctx: release.wait(10), fetch=False)
    engine = make_engine()
    engine.register(
        task="sync", collection="orders", handler=recorder, watch_projection={"v": 1},
        debounce=0,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "v": 1})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "processing")
    db.orders.update_one({"_id": "o1"}, {"$set": {"v": 2}})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "processing_dirty")
    release.set()
    wait_until(lambda: recorder.count("o1") == 2, message="the follow-up run")
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    assert [r["watched"] for r in recorder.runs] == [{"v": 1}, {"v": 2}]


def test_defer_current_requeues_without_counting_an_attempt(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    attempts: list[int] = []

    def handler(ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            ctx.defer_current("300ms")

    engine = make_engine()
    engine.register(task="hook", collection="events", handler=handler, debounce=0)
    start(engine, db)
    db.events.insert_one({"_id": "e1"})
    deferred = record_when(db, "events", "e1", lambda r: r.get("executionHistory"))
    assert deferred["status"] == "pending"
    assert deferred["attempts"] == 0
    assert deferred["executionHistory"][-1]["status"] == "deferred"
    wait_until(lambda: record(db, "events", "e1").get("status") == "completed")
    assert attempts == [1, 1]


@pytest.mark.parametrize(("defer", "debounce"), [("2h", 0), ("100ms", "2s")])
def test_a_dirty_record_that_deferred_waits_for_its_deferral_and_its_debounce(
    make_engine: EngineFactory, db: Database[Doc], defer: str, debounce: Any
) -> None:
    """Decided (issue 26, spec fidelity): new data during a run that deferred itself
    does not cut the deferral short, nor skip the debounce of that change."""

    runs: list[int] = []

    def handler(ctx: TaskContext) -> None:
        runs.append(1)
        if len(runs) == 1:
            db.events.update_one({"_id": ctx.doc_id}, {"$set": {"v": 2}})
            wait_until(lambda: record(db, "events", "e1").get("status") == "processing_dirty")
            ctx.defer_current(defer)

    engine = make_engine()
    engine.register(
        task="hook", collection="events", handler=handler, debounce=debounce,
        watch_projection={"v": 1},
    )  # fmt: skip
    start(engine, db)
    db.events.insert_one({"_id": "e1", "v": 1})
    deferred = record_when(db, "events", "e1", lambda r: r.get("executionHistory"))
    assert deferred["status"] == "pending"
    assert deferred["lastObservedValues"] == {"v": 2}
    if debounce == 0:  # the deferral, counted from the run
        expected = deferred["lastFinalizedAt"] + dt.timedelta(hours=2)
        assert abs(deferred["nextRunAt"] - expected) < dt.timedelta(seconds=1)
    else:  # the debounce, counted from the change
        assert deferred["nextRunAt"] == deferred["updatedAt"] + dt.timedelta(seconds=2)


def test_a_bad_deferral_fails_the_run_naming_the_call(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    def handler(ctx: TaskContext) -> None:
        ctx.defer_current("soon")

    engine = make_engine()
    engine.register(
        task="hook", collection="events", handler=handler, debounce=0,
        retry_policy={"type": "fixed", "interval": "1h"},
    )  # fmt: skip
    start(engine, db)
    db.events.insert_one({"_id": "e1"})
    failed = record_when(db, "events", "e1", lambda r: r.get("lastError"))
    assert failed["lastError"].startswith("ConfigError: defer_current='soon'")


def test_defer_current_accepts_a_datetime(make_engine: EngineFactory, db: Database[Doc]) -> None:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)

    def handler(ctx: TaskContext) -> None:
        ctx.defer_current(later)

    engine = make_engine()
    engine.register(task="hook", collection="events", handler=handler, debounce=0)
    start(engine, db)
    db.events.insert_one({"_id": "e1"})
    deferred = record_when(db, "events", "e1", lambda r: r.get("executionHistory"))
    next_run = deferred["nextRunAt"].replace(tzinfo=dt.timezone.utc)
    assert abs((next_run - later).total_seconds()) < 2


def test_throttle_all_pauses_the_task_type_on_this_instance(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    runs: list[tuple[object, dt.datetime]] = []

    def handler(ctx: TaskContext) -> None:
        runs.append((ctx.doc_id, dt.datetime.now(dt.timezone.utc)))
        if len(runs) == 1:
            ctx.throttle_all("1s")

    engine = make_engine(concurrency=1)
    engine.register(task="crm", collection="users", handler=handler, debounce=0)
    start(engine, db)
    db.users.insert_one({"_id": "u1"})
    wait_until(lambda: len(runs) == 1)
    db.users.insert_one({"_id": "u2"})
    wait_until(lambda: len(runs) == 2, timeout=10)
    assert (runs[1][1] - runs[0][1]).total_seconds() >= 0.9


def test_a_cluster_wide_throttle_pauses_every_instance(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    runs: list[tuple[str, dt.datetime]] = []

    def handler(ctx: TaskContext) -> None:
        runs.append((ctx.doc_id, dt.datetime.now(dt.timezone.utc)))
        if ctx.doc_id == "first":
            ctx.throttle_all("2s", scope="cluster")

    first, second = make_engine(instance_id="one"), make_engine(instance_id="two")
    for engine in (first, second):
        engine.register(task="crm", collection="users", handler=handler, debounce=0)
    start(first, db)
    second.start()
    db.users.insert_one({"_id": "first"})
    wait_until(lambda: len(runs) == 1)
    paused_at = runs[0][1]
    # Instances re-read cluster throttles at most once a second: past that, all know.
    wait_until(lambda: dt.datetime.now(dt.timezone.utc) > paused_at + dt.timedelta(seconds=1.1))
    db.users.insert_many([{"_id": f"u{i}"} for i in range(6)])
    wait_until(lambda: len(runs) == 7, timeout=15)
    # Neither instance ran anything before the 2 s pause ended.
    assert all((at - paused_at).total_seconds() >= 1.9 for _, at in runs[1:])
    assert {r["claimedBy"] for r in db.users_tasks.find({"sourceDocId": {"$ne": "first"}})} <= {
        "one", "two",
    }  # fmt: skip


def test_throttle_all_refuses_an_unknown_scope(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    errors: list[str] = []

    def handler(ctx: TaskContext) -> None:
        try:
            ctx.throttle_all("1s", scope="galaxy")
        except ConfigError as error:
            errors.append(error.option)

    engine = make_engine()
    engine.register(task="t", collection="users", handler=handler, debounce=0)
    start(engine, db)
    db.users.insert_one({"_id": "u1"})
    wait_until(lambda: errors == ["scope"])


def test_a_retry_is_timed_by_the_servers_clock_whatever_the_estimate(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test): a retry was due at this instance's estimate
    of the server's clock plus the delay; an estimate off by a clock step for a moment
    (until its next sample) delayed the retry by as much, here 100 s."""
    engine = make_engine()
    real = engine.clock.now
    ahead = dt.timedelta(seconds=100)

    def handler(ctx: TaskContext) -> None:
        if ctx.attempt == 1:
            engine.clock.now = lambda: real() + ahead  # type: ignore[method-assign]
            raise RuntimeError("first attempt")
        engine.clock.now = real  # type: ignore[method-assign]

    engine.register(task="sync", collection="orders", handler=handler, debounce=0,
                    retry_policy={"type": "fixed", "interval": 200, "max_attempts": 3})  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    task_record = record_when(db, "orders", "o1", lambda r: r["status"] == "completed", timeout=15)
    assert task_record["attempts"] == 2
