"""Planning: change events become task records, one per (task, document)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from mongoreact.store.globals import ReconciliationStore
from mongoreact.store.server import stream_pipeline

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, record_when, start, wait_until


def test_matching_document_gets_a_record_with_its_watched_values(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder()
    engine = make_engine()
    engine.register(
        task="sync", collection="orders", handler=recorder, filter={"status": "paid"},
        watch_projection={"status": 1, "customer.email": 1}, debounce=0,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_many(
        [
            {"_id": "paid", "status": "paid", "customer": {"email": "a@x", "name": "A"}, "n": 1},
            {"_id": "new", "status": "new"},
        ]
    )
    wait_until(lambda: recorder.count("paid") == 1)
    # The handler has run; its result is written just after (by the finalizer).
    task_record = record_when(db, "orders", "paid", lambda r: r["status"] != "processing")
    assert task_record["task"] == "sync"
    assert task_record["lastObservedValues"] == {"status": "paid", "customer": {"email": "a@x"}}
    assert task_record["status"] == "completed"
    assert recorder.runs[0]["watched"] == {"status": "paid", "customer": {"email": "a@x"}}
    assert record(db, "orders", "new") == {}
    assert db.orders_tasks.count_documents({}) == 1


def test_without_watch_projection_the_whole_document_is_the_snapshot(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "a": 1, "nested": {"b": [1, 2]}})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    assert record(db, "orders", "o1")["lastObservedValues"] == {
        "_id": "o1", "a": 1, "nested": {"b": [1, 2]},
    }  # fmt: skip


def test_a_new_run_only_when_the_snapshot_changes(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder()
    engine = make_engine()
    engine.register(
        task="sync", collection="orders", handler=recorder, watch_projection={"status": 1},
        debounce=0,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "status": "new", "note": ""})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    # An unwatched field changes: the record is planned again but no run is due.
    planned = record(db, "orders", "o1")["planStamp"]
    db.orders.update_one({"_id": "o1"}, {"$set": {"note": "hello"}})
    wait_until(lambda: record(db, "orders", "o1")["planStamp"] != planned, message="replanning")
    assert record(db, "orders", "o1")["status"] == "completed"
    assert recorder.count("o1") == 1
    # A watched field changes: it runs again with the new snapshot.
    db.orders.update_one({"_id": "o1"}, {"$set": {"status": "paid"}})
    wait_until(lambda: recorder.count("o1") == 2)
    assert recorder.runs[-1]["watched"] == {"status": "paid"}


def test_aggregation_expression_filters_including_now(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    bare, expr = Recorder(), Recorder()
    engine = make_engine()
    engine.register(
        task="big", collection="orders", handler=bare, filter={"$gt": ["$amount", 100]},
        debounce=0,
    )  # fmt: skip
    engine.register(
        task="due", collection="orders", handler=expr,
        filter={"$expr": {"$lte": ["$dueAt", "$$NOW"]}}, debounce=0,
    )  # fmt: skip
    start(engine, db)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    db.orders.insert_many(
        [
            {"_id": "small-past", "amount": 5, "dueAt": past},
            {"_id": "big-future", "amount": 500, "dueAt": future},
        ]
    )
    wait_until(lambda: bare.ids() == ["big-future"] and expr.ids() == ["small-past"])
    assert record(db, "orders", "small-past", "big") == {}
    assert record(db, "orders", "big-future", "due") == {}


def test_delete_records_that_the_source_is_gone(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    db.orders.delete_one({"_id": "o1"})
    gone = wait_until(lambda: record(db, "orders", "o1").get("sourceDeletedAt"))
    assert isinstance(gone, dt.datetime)
    assert record(db, "orders", "o1")["matched"] is False


def test_a_document_re_entering_the_filter_runs_again(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # The reference misses this: paid -> cancelled -> paid leaves the watched values
    # (email) unchanged, yet the order is paid anew.
    recorder = Recorder()
    engine = make_engine()
    engine.register(
        task="sync", collection="orders", handler=recorder, filter={"status": "paid"},
        watch_projection={"email": 1}, debounce=0,
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1", "status": "paid", "email": "a@x"})
    wait_until(lambda: recorder.count("o1") == 1)
    db.orders.update_one({"_id": "o1"}, {"$set": {"status": "cancelled"}})
    wait_until(lambda: record(db, "orders", "o1").get("matched") is False, message="unmatched")
    db.orders.update_one({"_id": "o1"}, {"$set": {"status": "paid"}})
    wait_until(lambda: recorder.count("o1") == 2, message="a second run")


def test_documents_that_existed_before_start_are_planned(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    db.orders.insert_many([{"_id": f"o{i}", "status": "paid"} for i in range(30)])
    db.orders.insert_one({"_id": 7, "status": "paid"})  # ids of another BSON type
    recorder = Recorder()
    engine = make_engine(batch_size=7)
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    wait_until(lambda: recorder.count() == 31, message="all 31 documents to run")
    assert sorted(map(str, recorder.ids())) == sorted([*(f"o{i}" for i in range(30)), "7"])


def test_the_change_stream_carries_ids_never_documents(db: Database[Doc]) -> None:
    with db.watch(stream_pipeline(["orders"])) as stream:
        db.orders.insert_one({"_id": "o1", "big": "x" * 1000})
        db.orders.update_one({"_id": "o1"}, {"$set": {"big": "y"}})
        db.other.insert_one({"_id": "ignored"})
        db.orders.delete_one({"_id": "o1"})
        events = [wait_until(lambda: stream.try_next() or {}) for _ in range(3)]
    assert [e["operationType"] for e in events] == ["insert", "update", "delete"]
    for event in events:
        assert set(event) <= {"_id", "operationType", "ns", "documentKey", "clusterTime", "to"}
        assert event["documentKey"] == {"_id": "o1"}


class _AggregateCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.planning = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate" and event.command.get("aggregate") == "orders":
            self.planning += 1

    def succeeded(self, event: Any) -> None: ...
    def failed(self, event: Any) -> None: ...


def test_events_are_planned_in_batches(
    mongo_uri: str, database_name: str, make_engine: EngineFactory, db: Database[Doc]
) -> None:
    counter = _AggregateCounter()
    client: MongoClient[Doc] = MongoClient(mongo_uri, event_listeners=[counter])
    try:
        recorder = Recorder(fetch=False)
        engine = make_engine(
            uri=None, client=client, batch_window=200, batch_max_wait=1000, batch_size=1000
        )
        engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
        start(engine, db)
        before = counter.planning
        db.orders.insert_many([{"n": i} for i in range(300)])
        wait_until(lambda: recorder.count() == 300, timeout=30)
        # 300 events, a handful of planning passes (each one aggregate with $merge).
        assert counter.planning - before <= 5, counter.planning - before
    finally:
        engine.stop(timeout=10)
        client.close()


def test_records_are_indexed_for_claims_and_due_after_the_default_debounce(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder())  # default debounce
    start(engine, db)
    indexes = db.orders_tasks.index_information()
    assert indexes["mongoreact_task_source"]["unique"] is True
    assert indexes["mongoreact_task_source"]["key"] == [("task", 1), ("sourceDocId", 1)]
    assert indexes["mongoreact_poll"]["key"] == [("task", 1), ("nextRunAt", 1)]
    assert indexes["mongoreact_poll"]["partialFilterExpression"] == {"nextRunAt": {"$type": "date"}}
    db.orders.insert_one({"_id": "o1"})
    planned = wait_until(lambda: record(db, "orders", "o1"))
    assert (planned["nextRunAt"] - planned["createdAt"]).total_seconds() == 1.0


def test_documents_a_rename_or_out_puts_in_a_watched_collection_are_planned(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """A rename over a watched collection (``$out`` does one) replaces its documents
    without a document event: the leader reconciles, so none is missed."""
    recorder = Recorder()
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "before"})
    wait_until(lambda: recorder.count("before") == 1)
    db.staging.insert_many([{"_id": f"out{i}"} for i in range(5)])
    db.staging.aggregate([{"$out": "orders"}])
    wait_until(lambda: all(recorder.count(f"out{i}") == 1 for i in range(5)))
    db.other.insert_many([{"_id": "renamed1"}, {"_id": "renamed2"}])
    db.other.rename("orders", dropTarget=True)
    wait_until(lambda: recorder.count("renamed1") == 1 and recorder.count("renamed2") == 1)
    db.orders.insert_one({"_id": "after"})  # planning goes on from the stream
    wait_until(lambda: recorder.count("after") == 1)
    assert recorder.count("before") == 1 and recorder.count("out0") == 1


def test_a_rename_is_not_lost_when_resetting_reconciliation_fails_once(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ReconciliationStore.reset
    failures = [AutoReconnect("connection lost while resetting reconciliation")]

    def flaky(self: ReconciliationStore, *, epoch: int) -> bool:
        if failures:
            raise failures.pop()
        return original(self, epoch=epoch)

    recorder = Recorder()
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    monkeypatch.setattr(ReconciliationStore, "reset", flaky)
    db.staging.insert_many([{"_id": f"out{i}"} for i in range(3)])
    db.staging.aggregate([{"$out": "orders"}])
    wait_until(lambda: all(recorder.count(f"out{i}") == 1 for i in range(3)))
    assert not failures  # the failure happened, and the rename came again
