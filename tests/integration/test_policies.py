"""Policies end to end: retry schedules, cleanup, evolution."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

import pytest
from pymongo.database import Database

from mongoreact import ConfigError, TaskContext
from mongoreact.cluster.specs import is_reconciled

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, record_when, start, wait_until


def failing(ctx: TaskContext) -> None:
    raise RuntimeError(f"attempt {ctx.attempt}")


class FailingClock:
    """A failing handler that notes when each run starts. The gaps between starts are
    what a retry policy promises (a retry starts ``delay`` after the failure was
    decided); the ``at`` of the history entries is when each result was *written*, and
    a slow first write shortens the gap after it."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def __call__(self, ctx: TaskContext) -> None:
        self.starts.append(time.monotonic())
        raise RuntimeError(f"attempt {ctx.attempt}")

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.starts)]


# Retry policies.


def test_series_retries_follow_the_intervals_and_repeat_the_last(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    handler = FailingClock()
    engine.register(
        task="t", collection="jobs", handler=handler, debounce=0, execution_history_limit=10,
        retry_policy={"type": "series", "intervals": ["300ms", "600ms"], "max_attempts": 4},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    failed = record_when(db, "jobs", "j1", lambda r: r["status"] == "failed", timeout=20)
    assert len(failed["executionHistory"]) == 4
    between = handler.gaps()
    assert len(between) == 3
    assert between[0] >= 0.3 and between[1] >= 0.6 and between[2] >= 0.6
    assert between[0] < 0.6  # the first retry used the first interval


def test_max_duration_gives_up_after_the_window_whatever_the_attempts(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(
        task="t", collection="jobs", handler=failing, debounce=0, execution_history_limit=50,
        retry_policy={"type": "fixed", "interval": "100ms", "max_duration": "1s"},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    failed = record_when(db, "jobs", "j1", lambda r: r["status"] == "failed", timeout=20)
    assert failed["attempts"] >= 4  # unlimited attempts within the window
    elapsed = (failed["lastFinalizedAt"] - failed["firstErrorAt"]).total_seconds()
    assert 1.0 <= elapsed < 3.0


def test_cron_retries_at_the_next_matching_time(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(
        task="t", collection="jobs", handler=failing, debounce=0,
        retry_policy={"type": "cron", "expression": "*/2 * * * * *", "max_attempts": 2},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    pending = record_when(db, "jobs", "j1", lambda r: r.get("lastError") is not None)
    assert pending["nextRunAt"].second % 2 == 0 and pending["nextRunAt"].microsecond == 0
    record_when(db, "jobs", "j1", lambda r: r["status"] == "failed", timeout=10)


def test_a_data_change_resets_attempts_unless_told_not_to(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    for task, reset in (("resets", True), ("keeps", False)):
        engine.register(
            task=task, collection="jobs", handler=failing, debounce=0,
            watch_projection={"v": 1},
            retry_policy={"type": "fixed", "interval": "1h", "max_attempts": 10,
                          "reset_retries_on_data_change": reset},
        )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1", "v": 1})
    for task in ("resets", "keeps"):
        wait_until(lambda t=task: record(db, "jobs", "j1", t).get("attempts") == 1)  # type: ignore[misc]
    db.jobs.update_one({"_id": "j1"}, {"$set": {"v": 2}})
    wait_until(lambda: record(db, "jobs", "j1", "resets").get("attempts") == 1
               and record(db, "jobs", "j1", "resets")["lastObservedValues"] == {"v": 2}
               and record(db, "jobs", "j1", "resets").get("status") == "pending")  # fmt: skip
    wait_until(lambda: record(db, "jobs", "j1", "keeps").get("attempts") == 2)


# Cleanup.


def cleanup_engine(make_engine: EngineFactory, **policy: Any) -> Any:
    engine = make_engine(cleanup_interval="200ms")
    engine.register(
        task="t", collection="orders", handler=Recorder(fetch=False), debounce=0,
        filter={"status": "open"}, cleanup_policy=policy,
    )  # fmt: skip
    return engine


def test_records_of_deleted_documents_are_cleaned_up_after_keep_for(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    start(cleanup_engine(make_engine, keep_for="300ms"), db)
    db.orders.insert_many([{"_id": "gone", "status": "open"}, {"_id": "closed", "status": "open"}])
    for doc_id in ("gone", "closed"):
        record_when(db, "orders", doc_id, lambda r: r["status"] == "completed")
    db.orders.delete_one({"_id": "gone"})
    db.orders.update_one({"_id": "closed"}, {"$set": {"status": "closed"}})
    wait_until(lambda: record(db, "orders", "gone") == {}, message="the orphan to go")
    # the default policy keeps records whose document still exists
    assert record(db, "orders", "closed")["matched"] is False
    meta = db["_mongoreact_globals"].find_one({"_id": "planner"})
    assert meta is not None and meta["lastCleanupAt"]


def test_no_longer_matching_records_go_with_that_policy(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = cleanup_engine(
        make_engine, delete_when="sourceDocumentDeletedOrNoLongerMatching", keep_for=0
    )
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "status": "open"})
    record_when(db, "orders", "o1", lambda r: r["status"] == "completed")
    db.orders.update_one({"_id": "o1"}, {"$set": {"status": "closed"}})
    wait_until(lambda: record(db, "orders", "o1") == {}, message="the unmatched record to go")


def test_records_of_documents_a_clock_filter_stopped_matching_go_with_that_policy(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (issue 26, spec fidelity): a document leaving a $$NOW filter as time
    passes, with no write, kept its record for ever."""
    engine = make_engine(cleanup_interval="200ms")
    engine.register(
        task="t", collection="offers", handler=Recorder(fetch=False), debounce=0,
        filter={"$expr": {"$gt": ["$expiresAt", "$$NOW"]}},
        cleanup_policy={"delete_when": "sourceDocumentDeletedOrNoLongerMatching", "keep_for": 0},
    )  # fmt: skip
    start(engine, db)
    now = dt.datetime.now(dt.timezone.utc)
    db.offers.insert_many([
        {"_id": "expiring", "expiresAt": now + dt.timedelta(seconds=2)},
        {"_id": "open", "expiresAt": now + dt.timedelta(hours=1)},
    ])  # fmt: skip
    for doc_id in ("expiring", "open"):
        record_when(db, "offers", doc_id, lambda r: r["status"] == "completed")
    wait_until(lambda: record(db, "offers", "expiring") == {}, timeout=20,
               message="the expired offer's record to go")  # fmt: skip
    kept = record(db, "offers", "open")
    assert kept["status"] == "completed" and kept["matched"] is True
    assert db.offers.count_documents({}) == 2  # the documents themselves stay


def test_never_and_keep_for_keep_records(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = make_engine(cleanup_interval="100ms")
    for task, policy in (("never", {"delete_when": "never"}), ("grace", {"keep_for": "1h"})):
        engine.register(
            task=task, collection="orders", handler=Recorder(fetch=False), debounce=0,
            cleanup_policy=policy,
        )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    for task in ("never", "grace"):
        wait_until(lambda t=task: record(db, "orders", "o1", t).get("status") == "completed")  # type: ignore[misc]
    db.orders.delete_one({"_id": "o1"})
    wait_until(lambda: record(db, "orders", "o1", "never").get("sourceDeletedAt"))
    globals_ = db["_mongoreact_globals"]
    first = wait_until(lambda: (globals_.find_one({"_id": "planner"}) or {}).get("lastCleanupAt"))
    wait_until(lambda: (globals_.find_one({"_id": "planner"}) or {}).get("lastCleanupAt") != first,
               message="a cleanup after the delete")  # fmt: skip
    assert record(db, "orders", "o1", "never") and record(db, "orders", "o1", "grace")


def test_reconciliation_finds_documents_deleted_while_history_was_lost(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    first = make_engine(instance_id="first")
    first.register(task="t", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(first, db)
    db.orders.insert_many([{"_id": "kept"}, {"_id": "deleted"}])
    record_when(db, "orders", "deleted", lambda r: r["status"] == "completed")
    assert first.stop(timeout=10)
    # The delete's event is lost: simulate the history loss the planner would detect.
    db.orders.delete_one({"_id": "deleted"})
    db["_mongoreact_globals"].update_one(
        {"_id": "planner"}, {"$unset": {"resumeToken": "", "reconciled": ""}}
    )
    # However recently its record was planned (server time), the next complete
    # reconciliation finds the document gone.
    second = make_engine(instance_id="second")
    second.register(task="t", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(second, db)
    gone = record_when(db, "orders", "deleted", lambda r: r.get("sourceDeletedAt") is not None)
    assert gone["matched"] is False
    assert record(db, "orders", "kept")["matched"] is True


# Evolution.


def test_handler_version_reprocesses_failed_records_once(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    v1 = make_engine(instance_id="v1")
    v1.register(task="t", collection="jobs", handler=failing, debounce=0,
                retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(v1, db)
    db.jobs.insert_many([{"_id": "bad"}, {"_id": "fine"}])
    record_when(db, "jobs", "bad", lambda r: r["status"] == "failed")
    record_when(db, "jobs", "fine", lambda r: r["status"] == "failed")
    db.jobs_tasks.update_one({"sourceDocId": "fine"}, {"$set": {"status": "completed"}})
    assert v1.stop(timeout=10)
    fixed = Recorder(fetch=False)
    evolution = {"handler_version": 2, "on_handler_version_change": "reprocess_failed"}
    v2 = make_engine(instance_id="v2")
    v2.register(task="t", collection="jobs", handler=fixed, debounce=0, evolution=evolution)
    start(v2, db)
    wait_until(lambda: fixed.ids() == ["bad"], message="the failed record to run again")
    assert record(db, "jobs", "bad")["attempts"] == 1  # a fresh count
    assert v2.stop(timeout=10)
    again = Recorder(fetch=False)
    v2b = make_engine(instance_id="v2b")  # same version: nothing more is reprocessed
    v2b.register(task="t", collection="jobs", handler=again, debounce=0, evolution=evolution)
    start(v2b, db)
    db.jobs.insert_one({"_id": "new"})
    wait_until(lambda: again.ids() == ["new"])


def test_reprocess_all_runs_every_record_again(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    v1 = make_engine(instance_id="v1")
    v1.register(task="t", collection="jobs", handler=Recorder(fetch=False), debounce=0)
    start(v1, db)
    db.jobs.insert_many([{"_id": i} for i in ("a", "b", "c")])
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "completed"}) == 3)
    assert v1.stop(timeout=10)
    rerun = Recorder(fetch=False)
    v2 = make_engine(instance_id="v2")
    v2.register(
        task="t", collection="jobs", handler=rerun, debounce=0,
        evolution={"handler_version": 2, "on_handler_version_change": "reprocess_all"},
    )  # fmt: skip
    start(v2, db)
    wait_until(lambda: sorted(rerun.ids()) == ["a", "b", "c"])


# Time-based filters.


def test_recheck_interval_plans_documents_that_start_matching_as_time_passes(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder()
    engine = make_engine()
    engine.register(
        task="remind", collection="orders", handler=recorder, debounce=0,
        filter={"$expr": {"$lte": ["$remindAt", "$$NOW"]}}, recheck_interval="300ms",
    )  # fmt: skip
    start(engine, db)
    now = db.client.admin.command("hello")["localTime"]
    db.orders.insert_many(
        [
            {"_id": "soon", "remindAt": now + dt.timedelta(seconds=1.5)},
            {"_id": "later", "remindAt": now + dt.timedelta(days=1)},
        ]
    )
    # No write happens after the insert: only a recheck can notice "soon" is due.
    wait_until(lambda: recorder.ids() == ["soon"], timeout=10)
    # The handler has returned; its result is written by the finalizer right after.
    wait_until(lambda: "lastSuccess" in record(db, "orders", "soon"))
    ran_at = record(db, "orders", "soon")["lastSuccess"]["at"]
    assert ran_at >= now + dt.timedelta(seconds=1.5)
    assert record(db, "orders", "later") == {}


def test_recheck_interval_needs_a_filter(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with pytest.raises(ConfigError) as caught:
        engine.register(task="t", collection="c", handler=failing, recheck_interval="1m")
    assert caught.value.option == "recheck_interval"


def test_linear_retries_grow_by_the_interval(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = make_engine()
    handler = FailingClock()
    engine.register(
        task="t", collection="jobs", handler=handler, debounce=0,
        retry_policy={"type": "linear", "interval": "250ms", "max_attempts": 3},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    failed = record_when(db, "jobs", "j1", lambda r: r["status"] == "failed", timeout=20)
    assert len(failed["executionHistory"]) == 3
    first, second = handler.gaps()
    assert 0.25 <= first < 0.5 <= second  # 250 ms, then 500 ms


def test_a_new_version_with_policy_none_reprocesses_nothing(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    v1 = make_engine(instance_id="v1")
    v1.register(task="t", collection="jobs", handler=failing, debounce=0,
                retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(v1, db)
    db.jobs.insert_one({"_id": "j1"})
    record_when(db, "jobs", "j1", lambda r: r["status"] == "failed")
    assert v1.stop(timeout=10)
    v2 = make_engine(instance_id="v2")
    v2.register(task="t", collection="jobs", handler=Recorder(), debounce=0,
                evolution={"handler_version": 2})  # fmt: skip
    start(v2, db)
    spec = db["_mongoreact_globals"].find_one({"_id": "task:t"})
    assert spec is not None and spec["handlerVersion"] == 2
    assert record(db, "jobs", "j1")["status"] == "failed"


def test_a_changed_filter_is_not_reconciled_when_told_not_to(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    old = make_engine(instance_id="old")
    old.register(task="t", collection="orders", handler=Recorder(), debounce=0,
                 filter={"amount": {"$gt": 100}})  # fmt: skip
    start(old, db)
    assert old.stop(timeout=10)
    new = make_engine(instance_id="new")
    new.register(task="t", collection="orders", handler=Recorder(), debounce=0,
                 filter={"amount": {"$gt": 50}},
                 evolution={"reconcile_on_trigger_change": False})  # fmt: skip
    new.start()
    wait_until(lambda: new.is_leader)
    meta = db["_mongoreact_globals"].find_one({"_id": "planner"})
    # Still marked reconciled (under the old definition, which counts here).
    assert meta is not None and any(key.startswith("t@") for key in meta["reconciled"])
    assert is_reconciled(new.definitions[0], set(meta["reconciled"]))
