"""The management API: list, count, retry and inspect task records from any process."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
from pymongo.database import Database

from mongoreact import ConfigError, ReactiveTasks, TaskContext

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, record_when, start, wait_until


class FailingOnVip:
    """A handler with a bug for VIP accounts, until ``fixed`` is set."""

    def __init__(self) -> None:
        self.fixed = threading.Event()

    def __call__(self, ctx: TaskContext) -> None:
        if ctx.get_document().get("vip") and not self.fixed.is_set():
            raise ValueError("CRM rejected (vip) account")


def app(
    make_engine: EngineFactory, db: Database[Doc], sync: FailingOnVip | None = None
) -> ReactiveTasks:
    engine = make_engine(instance_id="app")
    engine.register(
        task="sync", collection="users", handler=sync or FailingOnVip(), debounce=0,
        retry_policy={"type": "fixed", "interval": 10, "max_attempts": 1},
    )  # fmt: skip
    engine.register(task="welcome", collection="users", handler=Recorder(), debounce=0)
    start(engine, db)
    db.users.insert_many([{"_id": f"u{i}", "vip": i % 3 == 0, "n": i} for i in range(9)])
    wait_until(lambda: db.users_tasks.count_documents({"status": {"$in": ["completed", "failed"]}})
               == 18, message="every task to finish")  # fmt: skip
    return engine


def test_list_and_count_with_every_filter(make_engine: EngineFactory, db: Database[Doc]) -> None:
    app(make_engine, db)
    # An operator's process that registers nothing: task names come from the cluster.
    ops = make_engine(instance_id="ops")
    assert ops.count_tasks() == 18
    assert ops.count_tasks(task="sync", status="failed") == 3
    assert ops.count_tasks(task="sync", status=["failed", "completed"]) == 9
    assert ops.count_tasks(error="(vip)") == 3  # a substring, not a regex
    assert ops.count_tasks(error=re.compile(r"^valueerror: crm", re.IGNORECASE)) == 3
    assert ops.count_tasks(task="sync", source_doc_filter={"n": {"$gte": 6}}) == 3
    failed = ops.get_tasks(task="sync", status="failed", sort=[("sourceDocId", -1)])
    assert [r["sourceDocId"] for r in failed] == ["u6", "u3", "u0"]
    page = ops.get_tasks(sort={"sourceDocId": 1, "task": 1}, limit=4, skip=2)
    assert [(r["sourceDocId"], r["task"]) for r in page] == [
        ("u1", "sync"), ("u1", "welcome"), ("u2", "sync"), ("u2", "welcome"),
    ]  # fmt: skip
    detail = ops.get_task("sync", "u3")
    assert detail is not None and detail["executionHistory"][-1]["status"] == "failed"
    assert "Traceback" in detail["executionHistory"][-1]["traceback"]


def test_source_doc_filters_are_resolved_in_batches(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mongoreact.management as management

    app(make_engine, db)
    monkeypatch.setattr(management, "ID_BATCH", 2)  # 3 vip users: two batches
    ops = make_engine(instance_id="ops")
    assert ops.count_tasks(task="sync", source_doc_filter={"vip": True}) == 3
    records = ops.get_tasks(task="sync", source_doc_filter={"vip": True}, sort={"sourceDocId": 1})
    assert [r["sourceDocId"] for r in records] == ["u0", "u3", "u6"]


def test_retry_runs_failed_tasks_again_with_a_fresh_count(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # The handler is fixed, the data is not: only a retry runs the failed tasks again
    # (changing the documents would re-plan them by itself).
    sync = FailingOnVip()
    engine = app(make_engine, db, sync)
    sync.fixed.set()
    before = {r["_id"]: r["updatedAt"] for r in db.users_tasks.find({"status": "failed"})}
    result = engine.retry_tasks(task="sync", status="failed")
    assert result.modified_count == 3
    # A retry is a change of the record's own (mutation testing: updatedAt was not
    # asserted): cleanup's keep_for counts from it.
    for record_id, updated_at in before.items():
        found = db.users_tasks.find_one({"_id": record_id})
        assert found is not None and found["updatedAt"] > updated_at
    wait_until(lambda: engine.count_tasks(task="sync", status="completed") == 9)
    assert {r["attempts"] for r in engine.get_tasks(task="sync", limit=100)} == {1}


def test_retrying_a_running_task_makes_it_run_again_after(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    release = threading.Event()
    recorder = Recorder(action=lambda ctx: release.wait(10), fetch=False)
    engine = make_engine()
    engine.register(task="slow", collection="jobs", handler=recorder, debounce=0)
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    record_when(db, "jobs", "j1", lambda r: r["status"] == "processing")
    assert engine.retry_tasks(task="slow").modified_count == 1
    assert record(db, "jobs", "j1")["status"] == "processing_dirty"
    release.set()
    wait_until(lambda: recorder.count("j1") == 2)


def test_the_overview_counts_every_status(make_engine: EngineFactory, db: Database[Doc]) -> None:
    """Mutation testing: the overview could count only the queued statuses."""
    engine = app(make_engine, db)
    rows = {row["task"]: row["counts"] for row in engine.overview()["tasks"]}
    assert rows["welcome"] == {"completed": 9}
    assert rows["sync"] == {"completed": 6, "failed": 3}


def test_bad_management_input_is_a_config_error(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    app(make_engine, db)
    ops = make_engine(instance_id="ops")
    for kwargs, option in (
        ({"task": "nope"}, "task"),
        ({"status": "done"}, "status"),
        ({"error": 42}, "error"),
        ({"source_doc_filter": {"$where": "1"}}, "source_doc_filter"),
        ({"limit": 0}, "limit"),
        ({"skip": -1}, "skip"),
        ({"sort": {"password": 1}}, "sort"),
    ):
        with pytest.raises(ConfigError) as caught:
            ops.get_tasks(**kwargs)
        assert caught.value.option == option


def test_pause_and_defer_take_durations_as_everywhere(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: pause_task("t", "1h") and defer_task(..., "1h") raised TypeError
    (API.md: durations are accepted everywhere, bad ones raise ConfigError)."""
    engine = app(make_engine, db)
    for duration in ("1h", 3_600_000, dt.timedelta(hours=1)):
        engine.pause_task("sync", duration)
    engine.resume_task("sync")
    assert engine.defer_task("sync", "u0", "2h") == 1  # u0 is a failed vip record
    assert record(db, "users", "u0", "sync")["status"] == "pending"  # waiting, not failed
    due = record(db, "users", "u0", "sync")["nextRunAt"].replace(tzinfo=dt.timezone.utc)
    assert due > engine.clock.now() + dt.timedelta(minutes=90)
    for bad in ("soon", -1, "10"):
        with pytest.raises(ConfigError):
            engine.pause_task("sync", bad)
        with pytest.raises(ConfigError):
            engine.defer_task("sync", "u3", bad)
