"""Leadership hand-over, resume tokens, history loss and task sets that differ."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact import ReactiveTasks
from mongoreact.store.globals import ReconciliationStore
from mongoreact.testing import EmbeddedServer

from .conftest import EngineFactory
from .helpers import FAST, Doc, Recorder, reconciled, record, start, wait_until


def test_a_new_leader_resumes_after_the_last_planned_event(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder(fetch=False)
    first = make_engine(instance_id="first")
    first.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(first, db)
    db.orders.insert_one({"_id": "before"})
    wait_until(lambda: recorder.count("before") == 1)
    assert first.stop(timeout=10)
    token = db["_mongoreact_globals"].find_one({"_id": "planner"})["resumeToken"]  # type: ignore[index]
    # Written while no instance runs: only the saved stream position can find these.
    db.orders.insert_many([{"_id": f"gap{i}"} for i in range(20)])
    second = make_engine(instance_id="second")
    second.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(second, db)
    wait_until(lambda: recorder.count() == 21, message="the 20 documents written in the gap")
    # Saved within a heartbeat of planning.
    saved = wait_until(lambda: db["_mongoreact_globals"].find_one({"savedBy": "second"}) or {})
    assert saved["_id"] == "planner" and saved["resumeToken"] != token


def test_a_successor_replaying_planned_events_runs_nothing_again(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """A leader saves its position at most once a heartbeat, so after a crash its
    successor replays events it had planned: planning them again must change nothing."""
    recorder = Recorder(fetch=False)
    first = make_engine(instance_id="first")
    first.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(first, db)
    globals_ = db["_mongoreact_globals"]
    stale = globals_.find_one({"_id": "planner"})
    assert stale is not None
    db.orders.insert_many([{"_id": n, "v": 1} for n in range(20)])
    db.orders.update_one({"_id": 3}, {"$set": {"v": 2}})
    wait_until(lambda: db.orders_tasks.count_documents({"status": "completed"}) == 20)
    runs = recorder.count()
    assert first.stop(timeout=10)
    # As if the leader had crashed before saving anything after its first position.
    globals_.replace_one({"_id": "planner"}, stale)
    second = make_engine(instance_id="second")
    second.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(second, db)
    db.orders.insert_one({"_id": "after"})
    wait_until(lambda: recorder.count("after") == 1)
    saved = wait_until(lambda: globals_.find_one({"_id": "planner", "savedBy": "second"}) or {})
    assert saved["resumeToken"] != stale["resumeToken"]  # the events were replayed
    assert recorder.count() == runs + 1  # and nothing but the new document ran


@pytest.fixture
def short_history() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(history_size=30) as server:
        yield server


def test_lost_history_is_recovered_by_reconciliation(
    short_history: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"h_{uuid.uuid4().hex[:8]}"
    recorder = Recorder(fetch=False)
    client: MongoClient[Doc]
    with MongoClient(short_history.uri) as client:
        db: Database[Doc] = client[name]

        def engine(instance_id: str) -> ReactiveTasks:
            tasks = ReactiveTasks(
                uri=short_history.uri, database=name, instance_id=instance_id, **FAST
            )
            tasks.register(task="sync", collection="orders", handler=recorder, debounce=0)
            return tasks

        first = start(engine("first"), db)
        db.orders.insert_one({"_id": "seen"})
        wait_until(lambda: recorder.count("seen") == 1)
        assert first.stop(timeout=10)
        # 100 writes while nobody listens: far more than the server's 30-event history.
        db.orders.insert_many([{"_id": f"lost{i}"} for i in range(100)])
        second = engine("second")
        with caplog.at_level(logging.ERROR, logger="mongoreact"):
            second.start()
            try:
                wait_until(lambda: recorder.count() == 101, timeout=30, message="all documents")
            finally:
                second.stop(timeout=10)
        assert any("history lost" in r.getMessage() for r in caplog.records)


def test_the_leader_plans_tasks_only_other_instances_register(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Given a leader that knows task "a" only, and another instance that adds task "b"
    a, b = Recorder(fetch=False), Recorder(fetch=False)
    leader = make_engine(instance_id="leader")
    leader.register(task="a", collection="orders", handler=a, debounce=0)
    start(leader, db)
    assert leader.is_leader
    other = make_engine(instance_id="other")
    other.register(task="b", collection="invoices", handler=b, debounce=0)
    other.start()
    # When documents arrive for both tasks
    globals_ = db["_mongoreact_globals"]
    wait_until(
        lambda: globals_.find_one({"_id": "planner", "reconciled": {"$regex": "^b@"}}),
        message="b reconciled",
    )
    db.orders.insert_one({"_id": "o1"})
    db.invoices.insert_one({"_id": "i1"})
    # Then the leader plans both, and each runs where it is registered
    wait_until(lambda: a.count("o1") == 1 and b.count("i1") == 1)
    assert record(db, "invoices", "i1")["claimedBy"] == "other"
    assert leader.is_leader


def test_a_widened_filter_is_reconciled_at_the_next_start(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    db.orders.insert_many([{"_id": "big", "amount": 500}, {"_id": "mid", "amount": 75}])
    recorder = Recorder(fetch=False)
    old = make_engine(instance_id="v1")
    old.register(
        task="review", collection="orders", handler=recorder, debounce=0,
        filter={"amount": {"$gt": 100}},
    )  # fmt: skip
    start(old, db)
    wait_until(lambda: recorder.count("big") == 1)
    assert old.stop(timeout=10)
    new = make_engine(instance_id="v2")
    new.register(
        task="review", collection="orders", handler=recorder, debounce=0,
        filter={"amount": {"$gt": 50}},
    )  # fmt: skip
    new.start()
    # No write happened: only reconciliation of the changed trigger finds "mid".
    wait_until(lambda: recorder.count("mid") == 1, message="the newly matching document")
    assert recorder.count("big") == 1


def test_a_leader_that_loses_its_lease_stops_planning(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine(instance_id="deposed")
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    start(engine, db)
    assert engine.is_leader
    # Another instance takes the lease over (as after a long pause of this process).
    db["_mongoreact_globals"].update_one(
        {"_id": "leader"},
        [{"$set": {"instanceId": "usurper", "expiresAt": {"$add": ["$$NOW", 60_000]}}}],
    )
    wait_until(lambda: not engine.is_leader, message="deposition")
    wait_until(
        lambda: (
            not any(
                t.name.startswith(("mongoreact-planner-deposed", "mongoreact-stream-deposed"))
                for t in threading.enumerate()
            )
        ),
        message="the planner threads to stop",
    )


def test_a_long_reconciliation_keeps_the_leader_lease(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    db.orders.insert_many([{"n": i} for i in range(100)])
    save = ReconciliationStore.save_checkpoint

    def slow_save(self: ReconciliationStore, *args: Any, **kwargs: Any) -> bool:
        saved = save(self, *args, **kwargs)
        threading.Event().wait(0.25)  # 10 batches: the scan outlasts the 1 s lease twice
        return saved

    monkeypatch.setattr(ReconciliationStore, "save_checkpoint", slow_save)
    recorder = Recorder(fetch=False)
    engine = make_engine(batch_size=10)
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    engine.start()
    wait_until(lambda: engine.is_leader)
    epoch = db["_mongoreact_globals"].find_one({"_id": "leader"})["epoch"]  # type: ignore[index]
    wait_until(lambda: recorder.count() == 100, message="the scan to plan everything")
    lease = db["_mongoreact_globals"].find_one({"_id": "leader"})
    assert lease is not None and lease["epoch"] == epoch  # never lost, never re-taken
    assert engine.is_leader


def test_the_stream_position_is_saved_while_idle(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine(instance_id="idle")
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    start(engine, db)
    db.unwatched.insert_one({"_id": 1})  # moves the stream on without any event for us
    planner = db["_mongoreact_globals"]
    saved = wait_until(lambda: planner.find_one({"_id": "planner", "savedBy": "idle"}) or {})
    assert saved["resumeToken"]


def test_a_failed_run_is_logged_with_its_task_document_and_instance(
    make_engine: EngineFactory, db: Database[Doc], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ctx: Any) -> None:
        raise RuntimeError("boom")

    engine = make_engine(instance_id="logging-1")
    engine.register(
        task="sync", collection="orders", handler=broken, debounce=0,
        retry_policy={"type": "fixed", "interval": "1h", "max_attempts": 1},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="mongoreact"):
        start(engine, db)
        db.orders.insert_one({"_id": "o-1"})
        failure = wait_until(
            lambda: next((r for r in caplog.records if "failed (attempt" in r.getMessage()), None),
            message="the failure's log record",
        )
    assert failure is not None  # wait_until returns only a found record
    fields = {name: getattr(failure, name, None) for name in ("task", "doc_id", "instance_id")}
    assert fields == {"task": "sync", "doc_id": "o-1", "instance_id": "logging-1"}


def test_an_old_leader_plans_with_the_definition_a_rolling_deploy_published(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: at an equal handler_version the leader planned with its own (old)
    definition, so during a rolling deploy it reconciled and planned with the old
    filter while the new one was in force."""
    db.orders.insert_one({"_id": "mid", "amount": 75})
    recorder = Recorder(fetch=False)
    old = make_engine(instance_id="v1")
    old.register(task="review", collection="orders", handler=recorder, debounce=0,
                 filter={"amount": {"$gt": 100}})  # fmt: skip
    start(old, db)
    new = make_engine(instance_id="v2")  # deployed beside it, not leading
    new.register(task="review", collection="orders", handler=recorder, debounce=0,
                 filter={"amount": {"$gt": 50}})  # fmt: skip
    new.start()
    wait_until(lambda: recorder.count("mid") == 1, message="reconciled with the new filter")
    db.orders.insert_one({"_id": "late", "amount": 60})
    wait_until(lambda: recorder.count("late") == 1, message="planned with the new filter")
    assert old.is_leader


def test_an_old_instance_leaves_runs_planned_under_the_new_definition(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (found by the operations chaos run): during a rolling deploy that
    widened the filter, an old instance claimed records the new definition planned,
    judged them by its own filter, and completed them as skipped: the versions were
    never handled."""
    old_runs, new_runs = Recorder(), Recorder()
    old = make_engine(instance_id="v1")
    old.register(task="t", collection="orders", handler=old_runs, debounce=0,
                 filter={"kind": "a"})  # fmt: skip
    start(old, db)
    new = make_engine(instance_id="v2")
    new.register(task="t", collection="orders", handler=new_runs, debounce=0,
                 filter={"kind": {"$in": ["a", "b"]}})  # fmt: skip
    new.start()
    wait_until(lambda: reconciled(db, new), message="the new definition reconciled")
    db.orders.insert_many([{"_id": i, "kind": "b"} for i in range(20)])
    wait_until(lambda: new_runs.count() == 20, timeout=20, message="every run by v2")
    assert old_runs.count() == 0
    skipped = db.orders_tasks.count_documents({"executionHistory.status": "skipped"})
    assert skipped == 0
