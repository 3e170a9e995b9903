"""Workers: concurrency, leases, wake-ups, task_filter and task_caller."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from mongoreact import TaskContext, TaskInfo
from mongoreact.config.definition import build_definition
from mongoreact.records import NOT_OWNED, ClaimedTask, Finalized, Outcome, RunEnd
from mongoreact.store.tasks import TaskStore

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, record_when, start, wait_until


def test_at_most_concurrency_handlers_run_at_once(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    release = threading.Event()
    lock = threading.Lock()
    running, peak = [0], [0]

    def handler(ctx: TaskContext) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1

    engine = make_engine(concurrency=3)
    engine.register(task="slow", collection="jobs", handler=handler, debounce=0)
    start(engine, db)
    db.jobs.insert_many([{"n": i} for i in range(7)])
    wait_until(lambda: peak[0] == 3)  # (a claimed record is processing just before its run)
    assert db.jobs_tasks.count_documents({"status": "processing"}) == 3
    release.set()
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "completed"}) == 7)
    assert peak[0] == 3


def test_the_lease_is_renewed_while_the_handler_runs(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Given a 1 s lease and a handler that takes about 3 s
    release = threading.Event()
    recorder = Recorder(action=lambda ctx: release.wait(10))
    first = make_engine(task_lease=1000, instance_id="first")
    second = make_engine(task_lease=1000, instance_id="second")
    for engine in (first, second):
        engine.register(task="slow", collection="jobs", handler=recorder, debounce=0)
    start(first, db)
    second.start()
    db.jobs.insert_one({"_id": "j1"})
    wait_until(lambda: record(db, "jobs", "j1").get("status") == "processing")
    leased_until = record(db, "jobs", "j1")["nextRunAt"]
    # Then the lease moves forward and no other worker takes the task meanwhile
    wait_until(lambda: record(db, "jobs", "j1")["nextRunAt"] > leased_until, message="renewal")
    threading.Event().wait(2.5)  # longer than the lease: the task must not be re-run
    release.set()
    wait_until(lambda: record(db, "jobs", "j1").get("status") == "completed")
    assert recorder.count("j1") == 1
    assert record(db, "jobs", "j1")["attempts"] == 1


def test_a_task_whose_worker_died_is_claimed_after_its_lease_expires(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Given a record claimed by a worker that died (lease already expired)
    db.jobs.insert_one({"_id": "j1"})
    db.jobs_tasks.insert_one(
        {
            "task": "work", "sourceDocId": "j1", "status": "processing", "attempts": 1,
            "lastObservedValues": {"_id": "j1"}, "matched": True,
            "claimId": ObjectId(), "claimedBy": "dead",
            "nextRunAt": dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5),
            "updatedAt": dt.datetime.now(dt.timezone.utc),
        }
    )  # fmt: skip
    recorder = Recorder()
    engine = make_engine()
    engine.register(task="work", collection="jobs", handler=recorder, debounce=0)
    start(engine, db)
    # Then another worker runs it, counting the lost run as an attempt
    wait_until(lambda: record(db, "jobs", "j1").get("status") == "completed")
    assert recorder.runs[0]["attempt"] == 2
    assert record(db, "jobs", "j1")["claimedBy"] == engine.instance_id


def _store_with_a_due_record(db: Database[Doc]) -> TaskStore:
    """A store over ``jobs_tasks`` holding one pending record ``r1``, long due."""
    store = TaskStore(db)
    store.ensure_indexes("jobs_tasks")
    db.jobs_tasks.insert_one(
        {"_id": "r1", "task": "t", "sourceDocId": 1, "status": "pending", "attempts": 0,
         "nextRunAt": dt.datetime(2000, 1, 1)}
    )  # fmt: skip
    return store


def test_finalize_is_fenced_by_the_claim(db: Database[Doc]) -> None:
    store = _store_with_a_due_record(db)
    now = dt.datetime.now(dt.timezone.utc)
    claim = store.claim(
        "jobs_tasks", ["t"], now=now, instance_id="a", lease=dt.timedelta(seconds=60)
    )
    assert claim is not None
    stale = ClaimedTask(record=claim.record, claim_id=ObjectId(), tasks_collection="jobs_tasks")
    done = (
        build_definition({"task": "t", "collection": "jobs", "handler": print}),
        RunEnd(outcome=Outcome.COMPLETED, duration_ms=1, instance_id="i"),
    )
    assert store.finalize(stale, *done) == NOT_OWNED
    assert db.jobs_tasks.find_one({"_id": "r1"})["status"] == "processing"  # type: ignore[index]
    written = Finalized(written=True, known=True, status="completed", next_run_at=None)
    assert store.finalize(claim, *done) == written
    # Sent again (a retry after a lost reply): recognised as this claim's own write.
    assert store.finalize(claim, *done) == written


def test_the_local_planner_wakes_idle_workers(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Workers poll only every 30 s here, so a prompt run proves the planner's wake-up.
    recorder = Recorder()
    engine = make_engine(poll_min="30s", poll_max="30s")
    engine.register(task="work", collection="jobs", handler=recorder, debounce=100)
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    wait_until(lambda: recorder.count("j1") == 1, timeout=5, message="a run before the poll")


def test_task_filter_is_asked_each_poll(make_engine: EngineFactory, db: Database[Doc]) -> None:
    allowed = {"a"}
    asked: list[TaskInfo] = []

    def task_filter(info: TaskInfo) -> bool:
        asked.append(info)
        return info.task in allowed

    a, b = Recorder(), Recorder()
    engine = make_engine(task_filter=task_filter)
    engine.register(task="a", collection="jobs", handler=a, debounce=0)
    engine.register(task="b", collection="jobs", handler=b, debounce=0)
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    wait_until(lambda: a.count() == 1)
    wait_until(lambda: sum(1 for i in asked if i.task == "b") >= 3, message="more polls")
    assert b.count() == 0
    assert record(db, "jobs", "j1", "b")["status"] == "pending"
    assert TaskInfo(task="b", collection="jobs") in asked
    allowed.add("b")  # the filter is consulted again on later polls
    wait_until(lambda: b.count() == 1)


def test_task_caller_wraps_every_run(make_engine: EngineFactory, db: Database[Doc]) -> None:
    seen: list[tuple[str, Any]] = []

    def caller(run: Any) -> None:
        seen.append(("before", threading.current_thread().name))
        try:
            run()
        except RuntimeError as error:
            seen.append(("error", str(error)))
            raise

    def handler(ctx: TaskContext) -> None:
        if ctx.doc_id == "bad":
            raise RuntimeError("boom")

    engine = make_engine(task_caller=caller)
    engine.register(
        task="work", collection="jobs", handler=handler, debounce=0,
        retry_policy={"type": "fixed", "interval": "1h"},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_many([{"_id": "good"}, {"_id": "bad"}])
    wait_until(lambda: record(db, "jobs", "bad").get("lastError") == "RuntimeError: boom")
    wait_until(lambda: record(db, "jobs", "good").get("status") == "completed")
    assert [s for s in seen if s[0] == "before"].__len__() == 2
    assert ("error", "boom") in seen
    assert all(name.startswith("mongoreact-worker-") for kind, name in seen if kind == "before")


def test_a_task_caller_that_never_runs_the_task_is_a_failure(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder()
    engine = make_engine(task_caller=lambda run: None)
    engine.register(
        task="work", collection="jobs", handler=recorder, debounce=0,
        retry_policy={"type": "fixed", "interval": "1h"},
    )  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    error = record_when(db, "jobs", "j1", lambda r: r.get("lastError"))["lastError"]
    assert "without calling run()" in error
    assert recorder.count() == 0


def test_max_concurrency_holds_across_instances(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def handler(ctx: TaskContext) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.2)
        with lock:
            running[0] -= 1

    engines = [make_engine(instance_id=f"i{i}", concurrency=3) for i in range(2)]
    for engine in engines:
        engine.register(
            task="api", collection="jobs", handler=handler, debounce=0, max_concurrency=2
        )
    start(engines[0], db)
    engines[1].start()
    db.jobs.insert_many([{"n": i} for i in range(10)])
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "completed"}) == 10, timeout=30)
    assert peak[0] == 2  # six worker threads, never more than two at once
    slots = db["_mongoreact_globals"].find_one({"_id": "slots:api"})
    assert slots is not None and slots["holders"] == []
    attempts = [r["attempts"] for r in db.jobs_tasks.find()]
    assert attempts == [1] * 10  # records given back at the limit do not count attempts


@pytest.mark.parametrize("batch", [1, 8])
def test_a_host_clock_ahead_does_not_claim_a_running_lease(db: Database[Doc], batch: int) -> None:
    """Regression: the claim compared the lease with the host's estimate of the server's
    clock; a host 90 s ahead took a running task (60 s lease) right after it started."""
    store = _store_with_a_due_record(db)
    lease = dt.timedelta(seconds=60)
    now = dt.datetime.now(dt.timezone.utc)
    first = store.claim_many("jobs_tasks", ["t"], now=now, instance_id="a", lease=lease, limit=1)
    assert len(first.claims) == 1
    ahead = now + dt.timedelta(seconds=90)
    stolen = store.claim_many(
        "jobs_tasks", ["t"], now=ahead, instance_id="b", lease=lease, limit=batch
    )
    assert stolen.claims == []
    assert db.jobs_tasks.find_one({"_id": "r1"})["claimedBy"] == "a"  # type: ignore[index]
