"""Batch claims and group-commit finalizes: fewer commands, same guarantees."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from mongoreact import TaskConditionFailedError, TaskContext
from mongoreact.config.definition import build_definition
from mongoreact.execution.finalizer import Finalizer
from mongoreact.records import NOT_OWNED, WRITTEN_IN_BATCH, ClaimedTask, Finalized, Outcome, RunEnd
from mongoreact.store.tasks import TaskStore

from .conftest import EngineFactory
from .helpers import Doc, record, start, wait_until

LEASE = dt.timedelta(seconds=60)
# A completed run of the jobs' task: the definition and the end a finalize records.
DONE = (
    build_definition({"task": "t", "collection": "jobs", "handler": print}),
    RunEnd(outcome=Outcome.COMPLETED, duration_ms=1, instance_id="test"),
)
# What a finalize written alone answers: the record's new status and nextRunAt.
COMPLETED_ALONE = Finalized(written=True, known=True, status="completed", next_run_at=None)


class Commands(monitoring.CommandListener):
    """Counts the commands sent, by name and collection."""

    def __init__(self) -> None:
        self.targets: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.targets[event.command_name, target if isinstance(target, str) else ""] += 1

    @property
    def counts(self) -> Counter[str]:
        """Commands sent, by name."""
        by_name: Counter[str] = Counter()
        for (name, _), n in self.targets.items():
            by_name[name] += n
        return by_name

    def on(self, collection: str) -> int:
        """Commands sent to ``collection``."""
        return sum(n for (_, target), n in self.targets.items() if target == collection)

    def succeeded(self, event: Any) -> None: ...
    def failed(self, event: Any) -> None: ...


def _queue(db: Database[Doc], count: int) -> None:
    TaskStore(db).ensure_indexes("jobs_tasks")
    old = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    db.jobs_tasks.insert_many(
        [
            {"_id": f"r{n:03}", "task": "t", "sourceDocId": n, "status": "pending",
             "attempts": n % 3, "nextRunAt": old + dt.timedelta(seconds=n)}
            for n in range(count)
        ]
    )  # fmt: skip


def _claim(store: TaskStore, limit: int, instance: str = "a", spread: int = 1) -> list[ClaimedTask]:
    return store.claim_many(
        "jobs_tasks",
        ["t"],
        now=dt.datetime.now(dt.timezone.utc),
        instance_id=instance,
        lease=LEASE,
        limit=limit,
        spread=spread,
    ).claims


@pytest.fixture
def counted(mongo_uri: str, database_name: str) -> Iterator[tuple[Database[Doc], Commands]]:
    """The test's database through a client whose commands are counted."""
    commands = Commands()
    client: MongoClient[Doc] = MongoClient(mongo_uri, event_listeners=[commands], tz_aware=True)
    yield client[database_name], commands
    client.close()


def test_a_batch_claim_takes_the_most_overdue_records_in_two_commands(
    counted: tuple[Database[Doc], Commands],
) -> None:
    db, commands = counted
    _queue(db, 10)
    commands.targets.clear()

    claims = _claim(TaskStore(db), 4)

    assert commands.counts == {"find": 1, "update": 1}
    assert [c.id for c in claims] == ["r000", "r001", "r002", "r003"]
    assert len({c.claim_id for c in claims}) == 4
    for claim in claims:
        stored = db.jobs_tasks.find_one({"_id": claim.id})
        assert stored is not None
        # The locally worked-out record agrees with the server's.
        for field in ("status", "claimId", "claimedBy", "attempts"):
            assert claim.record[field] == stored[field], field
        assert abs(claim.record["nextRunAt"] - stored["nextRunAt"]) < dt.timedelta(seconds=5)
    assert db.jobs_tasks.count_documents({"status": "processing"}) == 4


def test_racing_batch_claims_take_each_record_once(db: Database[Doc]) -> None:
    _queue(db, 60)
    store = TaskStore(db)
    taken: list[ClaimedTask] = []
    lock = threading.Lock()

    def claimer(instance: str, spread: int) -> None:
        while claims := _claim(store, 7, instance, spread):
            with lock:
                taken.extend(claims)

    threads = [threading.Thread(target=claimer, args=(f"i{n}", n % 2 + 1)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(c.id for c in taken) == [f"r{n:03}" for n in range(60)]
    for claim in taken:
        stored = db.jobs_tasks.find_one({"_id": claim.id})
        assert stored is not None and stored["claimId"] == claim.claim_id
        assert stored["claimedBy"] == claim.record["claimedBy"]


def test_a_spread_claim_takes_a_subset_of_the_most_overdue(db: Database[Doc]) -> None:
    _queue(db, 20)
    claims = _claim(TaskStore(db), 3, spread=4)
    ids = [c.id for c in claims]
    assert len(ids) == 3 and ids == sorted(ids)
    assert set(ids) <= {f"r{n:03}" for n in range(12)}
    assert db.jobs_tasks.count_documents({"status": "processing"}) == 3


def test_a_batch_finalize_is_fenced_per_claim(db: Database[Doc]) -> None:
    _queue(db, 3)
    store = TaskStore(db)
    claims = _claim(store, 3)
    stale = ClaimedTask(record=claims[1].record, claim_id=ObjectId(), tasks_collection="jobs_tasks")

    answers = store.finalize_many([(claims[0], *DONE), (stale, *DONE), (claims[2], *DONE)])

    assert answers == [WRITTEN_IN_BATCH, NOT_OWNED, WRITTEN_IN_BATCH]
    statuses = {d["_id"]: d["status"] for d in db.jobs_tasks.find()}
    assert statuses == {"r000": "completed", "r001": "processing", "r002": "completed"}
    # Sent again (as after a transient error), the applied ones still count as written.
    assert store.finalize_many([(claims[0], *DONE), (claims[1], *DONE)]) == [WRITTEN_IN_BATCH] * 2


class HeldStore(TaskStore):
    """A store whose single finalize waits until ``release`` is set."""

    def __init__(self, database: Database[Doc]) -> None:
        super().__init__(database)
        # Per store, not per class: a class-level event stays set for a second run of
        # the test in the same process (mutmut runs the suite twice), which then
        # never holds its first write.
        self.entered = threading.Event()
        self.release = threading.Event()

    def finalize(self, claim: ClaimedTask, definition: Any, end: Any, session: Any = None) -> Any:
        self.entered.set()
        self.release.wait(30)
        return super().finalize(claim, definition, end, session)


def test_finalizes_that_arrive_during_a_write_share_the_next_one(
    counted: tuple[Database[Doc], Commands],
) -> None:
    db, commands = counted
    _queue(db, 40)
    store = HeldStore(db)
    claims = _claim(store, 40)
    finalizer = Finalizer(store, "test")
    answers: dict[Any, Any] = {}

    def finished(claim: ClaimedTask) -> Any:
        return lambda answer, error: answers.__setitem__(claim.id, (answer, error))

    commands.targets.clear()
    finalizer.start()
    try:
        finalizer.submit(claims[0], *DONE, finished(claims[0]))
        wait_until(store.entered.is_set, message="the first write")  # held in flight
        for claim in claims[1:]:
            finalizer.submit(claim, *DONE, finished(claim))  # returns at once
        assert finalizer.waiting == 39
        store.release.set()
        wait_until(lambda: len(answers) == 40, message="every finalize")
    finally:
        finalizer.stop()
        assert finalizer.join(10)

    assert commands.counts == {"findAndModify": 1, "update": 1}
    assert answers[claims[0].id] == (COMPLETED_ALONE, None)
    assert all(answers[c.id] == (WRITTEN_IN_BATCH, None) for c in claims[1:])
    assert db.jobs_tasks.count_documents({"status": "completed"}) == 40


def test_finalizes_handed_over_before_stop_are_still_written(db: Database[Doc]) -> None:
    _queue(db, 3)
    store = TaskStore(db)
    finalizer = Finalizer(store, "test")
    done: list[Any] = []
    for claim in _claim(store, 3):
        finalizer.submit(claim, *DONE, lambda answer, error: done.append((answer, error)))
    finalizer.start()
    finalizer.stop()
    assert finalizer.join(10)
    assert len(done) == 3 and all(error is None for _, error in done)
    assert db.jobs_tasks.count_documents({"status": "completed"}) == 3


def test_a_lone_finalize_returns_the_new_status(db: Database[Doc]) -> None:
    _queue(db, 1)
    store = TaskStore(db)
    (claim,) = _claim(store, 1)
    done: list[Any] = []
    finalizer = Finalizer(store, "test")
    finalizer.submit(claim, *DONE, lambda answer, error: done.append((answer, error)))
    finalizer.write_all()
    assert done == [(COMPLETED_ALONE, None)]


def test_a_busy_instance_claims_ahead_and_batches_its_finalizes(
    counted: tuple[Database[Doc], Commands], db: Database[Doc], make_engine: EngineFactory
) -> None:
    engine_db, commands = counted  # the engine's commands are counted, the test's are not
    go = threading.Event()  # the backlog builds up before any claim
    engine = make_engine(
        client=engine_db.client,
        uri=None,
        concurrency=1,
        prefetch=16,
        task_filter=lambda info: go.is_set(),
    )
    ran: list[Any] = []
    engine.register(task="t", collection="jobs", handler=lambda ctx: ran.append(ctx.doc_id),
                    debounce=0)  # fmt: skip
    start(engine, db)
    db.jobs.insert_many([{"_id": n} for n in range(100)])
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "pending"}) == 100)
    commands.targets.clear()
    go.set()
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "completed"}) == 100, timeout=60)

    assert sorted(ran) == list(range(100))
    # One thread, and yet far fewer commands than a claim and a finalize per task: each
    # claim takes up to 17 records, and finalizes that wait for a write share the next.
    # (Measured: about 35. A claim and a finalize per task would be 200.)
    assert commands.on("jobs_tasks") < 60, commands.targets


def test_handlers_reading_their_documents_get_them_from_one_read_per_batch(
    counted: tuple[Database[Doc], Commands], db: Database[Doc], make_engine: EngineFactory
) -> None:
    engine_db, commands = counted
    go = threading.Event()
    engine = make_engine(client=engine_db.client, uri=None, concurrency=1, prefetch=16,
                         task_filter=lambda info: go.is_set())  # fmt: skip
    seen: dict[Any, Any] = {}

    def handler(ctx: TaskContext) -> None:
        seen[ctx.doc_id] = ctx.get_document()["n"]

    engine.register(task="t", collection="jobs", handler=handler, debounce=0)
    start(engine, db)
    db.jobs.insert_one({"_id": "warm-up", "n": -1})  # shows the handler reads documents
    go.set()
    wait_until(lambda: "warm-up" in seen)
    go.clear()
    db.jobs.insert_many([{"_id": n, "n": n} for n in range(100)])
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "pending"}) == 100)
    commands.targets.clear()
    go.set()
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "completed"}) == 101, timeout=60)

    assert all(seen[n] == n for n in range(100))
    # A read per claimed batch, not one per handler (100).
    print("finds on the source collection:", commands.targets["find", "jobs"])
    assert commands.targets["find", "jobs"] < 25, commands.targets


def test_a_change_after_the_batch_read_runs_the_task_again_on_the_new_data(
    db: Database[Doc], make_engine: EngineFactory
) -> None:
    go = threading.Event()
    engine = make_engine(concurrency=1, prefetch=16, task_filter=lambda info: go.is_set())
    runs: list[tuple[Any, Any]] = []

    def handler(ctx: TaskContext) -> None:
        if ctx.doc_id == "a" and not runs:
            # Changed after its batch was read: this run may see the old value, and
            # must be followed by one that sees the new.
            db.jobs.update_one({"_id": "a"}, {"$set": {"n": 2}})
        try:
            runs.append((ctx.doc_id, ctx.get_document()["n"]))
        except TaskConditionFailedError:
            runs.append((ctx.doc_id, "changed"))
            raise

    engine.register(task="t", collection="jobs", handler=handler, debounce=0,
                    watch_projection={"n": 1})  # fmt: skip
    start(engine, db)
    db.jobs.insert_one({"_id": "warm-up", "n": 0})
    go.set()
    wait_until(lambda: runs)
    go.clear()
    runs.clear()
    db.jobs.insert_many([{"_id": "a", "n": 1}, {"_id": "b", "n": 1}])
    wait_until(lambda: db.jobs_tasks.count_documents({"status": "pending"}) == 2)
    go.set()
    wait_until(lambda: ("a", 2) in runs, message="a run on the new value")
    assert runs[0] == ("a", 1)  # answered from the batch read, taken before the change
    wait_until(lambda: record(db, "jobs", "a")["status"] == "completed")
    assert record(db, "jobs", "a")["lastObservedValues"] == {"n": 2}


class _PositionSaves(Commands):
    """Also counts the planner's saves of its stream position."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        super().started(event)
        command = event.command
        if event.command_name == "update" and command["update"] == "_mongoreact_globals":
            self.saves += sum(1 for u in command["updates"] if u["q"].get("_id") == "planner")


def test_a_steady_trickle_saves_the_stream_position_once_a_heartbeat(
    mongo_uri: str, database_name: str, db: Database[Doc], make_engine: EngineFactory
) -> None:
    commands = _PositionSaves()
    client: MongoClient[Doc] = MongoClient(mongo_uri, event_listeners=[commands], tz_aware=True)
    heartbeat = 1.0
    engine = make_engine(client=client, uri=None, leader_heartbeat=int(heartbeat * 1000),
                         leader_ttl=5000)  # fmt: skip
    ran: list[Any] = []
    engine.register(task="t", collection="jobs", handler=lambda ctx: ran.append(ctx.doc_id),
                    debounce=0)  # fmt: skip
    start(engine, db)
    commands.saves = 0
    began = time.monotonic()
    pause = threading.Event()
    with db.client.start_session() as session:
        for n in range(30):  # one write every 50 ms: each its own planning batch
            db.jobs.insert_one({"_id": n}, session=session)
            pause.wait(0.05)
        last_write = session.operation_time
    wait_until(lambda: len(ran) == 30)
    elapsed = time.monotonic() - began
    # A save per batch was 30 writes; once a heartbeat is elapsed / heartbeat + 1.
    assert commands.saves <= elapsed / heartbeat + 1, (commands.saves, elapsed)
    assert engine.stop(timeout=10)
    client.close()
    # The clean stop saved the position up to the last write: nothing left to replay.
    saved = db["_mongoreact_globals"].find_one({"_id": "planner"})
    assert saved is not None and last_write is not None
    assert saved["streamTime"] >= last_write


def test_a_lone_write_reaches_its_handler_in_two_planning_and_claiming_round_trips(
    counted: tuple[Database[Doc], Commands],
    db: Database[Doc],
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # From an idle instance, a lone change used to wait for four sequential commands
    # before its handler started: the planning merge, the marking of records that no
    # longer match, a batch claim's find and its update. Now the workers are woken
    # between the merge and the marking, and the first claim after an idle wait is
    # one findAndModify.
    engine_db, commands = counted
    holding = threading.Event()  # set: the marking waits until the handler has run
    ran = threading.Event()
    mark_unmatched = TaskStore.mark_unmatched

    def marking_held(self: TaskStore, *args: Any, **kwargs: Any) -> int:
        if holding.is_set():
            ran.wait(20)
        return mark_unmatched(self, *args, **kwargs)

    monkeypatch.setattr(TaskStore, "mark_unmatched", marking_held)
    # Polls too slow to find the record: only the planner's wake-up does, in time.
    engine = make_engine(client=engine_db.client, uri=None, poll_min=30_000, poll_max=60_000)
    before_run: Counter[tuple[str, str]] = Counter()

    def handler(ctx: TaskContext) -> None:
        before_run.update(commands.targets)
        ran.set()

    engine.register(task="t", collection="jobs", handler=handler, debounce=0)
    start(engine, db)
    holding.set()
    commands.targets.clear()
    db.jobs.insert_one({"_id": 1})
    assert ran.wait(10), "the handler waited for the marking"
    # The claim, and no batch claim (its update). A batch claim's find or the cleanup's
    # may have run meanwhile, finding nothing.
    assert before_run["findAndModify", "jobs_tasks"] == 1, before_run
    assert before_run["update", "jobs_tasks"] == 0, before_run
