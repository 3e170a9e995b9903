"""Regression tests for the ways work could be lost (issue "Nothing is lost").

Each test fails on the code before its fix; the comment on each says what was lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from bson import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database

from mongoreact.cluster.specs import reconciliation_key
from mongoreact.config.definition import build_definition
from mongoreact.config.registry import TaskRegistry
from mongoreact.config.settings import build_settings
from mongoreact.monitoring.measurements import Measurements
from mongoreact.planning.planner import Planner
from mongoreact.planning.reconciler import Reconciler
from mongoreact.records import NOT_OWNED, Finalized, Outcome, RunEnd
from mongoreact.store import pipelines
from mongoreact.store.globals import GlobalsStore, LeaseStore, Saved
from mongoreact.store.tasks import TaskStore

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until


def _noop(ctx: object) -> None:
    """A handler that is never run (the engines here have no workers)."""


def test_a_burst_of_full_batches_plans_every_document(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # The planner took batch_size events and then removed one more from the queue that
    # it never planned: one document in every batch_size + 1 was lost.
    engine = make_engine(concurrency=0, batch_size=50)
    engine.register(task="sync", collection="orders", handler=_noop)
    start(engine, db)
    db.orders.insert_many([{"_id": i} for i in range(1000)])
    wait_until(
        lambda: db.orders_tasks.count_documents({}) == 1000,
        timeout=60,
        message="a record for each of the 1000 documents",
    )


def test_a_batch_claim_hands_over_exactly_the_version_it_claimed(
    db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    # claim_many read its candidates, then claimed them with an update that only
    # repeated the claim condition. A record re-planned in between (overdue, so still
    # due) was claimed anyway, and the worker ran the snapshot read before the change:
    # its late-binding check failed, the run was "skipped" and the finalize completed
    # the new snapshot, which never ran.
    store = TaskStore(db)
    definition = build_definition(
        {"task": "sync", "collection": "orders", "handler": _noop, "debounce": 1000,
         "watch_projection": {"v": 1}}
    )  # fmt: skip
    store.ensure_indexes(definition.tasks_collection)
    db.orders.insert_many([{"_id": i, "v": 1} for i in range(3)])
    store.plan(definition, [0, 1, 2], [])
    an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    db.orders_tasks.update_many({}, {"$set": {"dueAt": an_hour_ago, "nextRunAt": an_hour_ago}})
    replanned = False
    bulk_write = Collection.bulk_write

    def replan_first(self: Collection[Doc], *args: Any, **kwargs: Any) -> Any:
        nonlocal replanned
        if not replanned:  # between the claim's read and its update
            replanned = True
            db.orders.update_one({"_id": 0}, {"$set": {"v": 2}})
            store.plan(definition, [0], [])
        return bulk_write(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "bulk_write", replan_first)
    batch = store.claim_many(
        "orders_tasks", ["sync"], now=dt.datetime.now(dt.timezone.utc),
        instance_id="i", lease=dt.timedelta(minutes=1), limit=3,
    )  # fmt: skip
    assert replanned and batch.claims
    for claim in batch.claims:
        stored = db.orders_tasks.find_one({"_id": claim.id})
        assert stored is not None and stored["claimId"] == claim.claim_id
        for field in ("lastObservedValues", "attempts", "updatedAt", "dueAt"):
            assert claim.record.get(field) == stored.get(field), field
    # The re-planned record is left for the next claim, with its new snapshot.
    fresh = db.orders_tasks.find_one({"sourceDocId": 0})
    assert fresh is not None and fresh["lastObservedValues"] == {"v": 2}


@pytest.mark.parametrize("batched", [False, True])
def test_a_finalize_retried_after_a_lost_reply_is_recognised(
    db: Database[Doc], batched: bool
) -> None:
    # The first attempt landed but its reply was lost; the retry matched nothing and the
    # run was reported as "another worker owns the record", with the wrong outcome and
    # no follow-up wake-up - even when another instance had claimed the record since.
    store = TaskStore(db)
    definition = build_definition({"task": "sync", "collection": "orders", "handler": _noop})
    store.ensure_indexes(definition.tasks_collection)
    db.orders.insert_many([{"_id": 1}, {"_id": 2}])
    store.plan(definition, [1, 2], [])
    db.orders_tasks.update_many({}, {"$set": {"nextRunAt": dt.datetime(2000, 1, 1)}})
    now, lease = dt.datetime.now(dt.timezone.utc), dt.timedelta(minutes=1)
    claims = [
        claim
        for _ in range(2)
        for claim in store.claim_many(
            "orders_tasks", ["sync"], now=now, instance_id="i", lease=lease, limit=1
        ).claims
    ]
    assert len(claims) == 2
    retry_in = now + dt.timedelta(hours=1)
    end = RunEnd(
        outcome=Outcome.RETRY, duration_ms=1, instance_id="i", error="E: boom", traceback="",
        next_run_at=retry_in,
    )  # fmt: skip
    requests = [(claim, definition, end) for claim in claims]

    def send() -> list[Finalized]:
        if batched:
            return store.finalize_many(requests)
        return [store.finalize(*request) for request in requests]

    assert all(answer.written for answer in send())  # the first attempt lands
    db.orders_tasks.update_many({}, {"$set": {"nextRunAt": dt.datetime(2000, 1, 1)}})
    assert store.claim_many("orders_tasks", ["sync"], now=now, instance_id="j", lease=lease,
                            limit=1).claims  # fmt: skip
    answers = send()  # the retry
    assert all(answer.written for answer in answers), answers
    if not batched:
        assert all(a.known for a in answers)
        assert {a.status for a in answers} <= {"pending", "processing"}
    # Another claim fences the real owner's finalize out.
    other = [(attrs.evolve(claim, claim_id=ObjectId()), definition, end) for claim in claims]
    assert store.finalize_many(other) == [NOT_OWNED, NOT_OWNED]


def test_a_renewal_landing_after_the_local_expiry_restarts_planning(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A renewal still in flight past the local expiry made is_leader() false; the
    # planner saw it and stopped for good; the renewal then succeeded and was not
    # counted as a new election, so the instance held the lease and planned nothing.
    engine = make_engine(concurrency=0, leader_heartbeat=100, leader_ttl=1000)
    engine.register(task="sync", collection="orders", handler=_noop, debounce=0)
    start(engine, db)
    acquire = LeaseStore.acquire
    calls = 0
    stalled = threading.Event()

    def slow_once(self: LeaseStore, *args: Any) -> Any:
        # A slow renewal (0.3 s), then one in flight past the local expiry (which comes
        # 0.6 s into it) but back before its own start plus the TTL: the lease never
        # looks expired at the start of a heartbeat.
        nonlocal calls
        calls += 1
        if calls == 1:
            threading.Event().wait(0.3)
        elif calls == 2:
            threading.Event().wait(0.65)
            db.orders.insert_one({"_id": "during"})  # the planner finds it is not leader
            threading.Event().wait(0.1)
            stalled.set()
        return acquire(self, *args)

    monkeypatch.setattr(LeaseStore, "acquire", slow_once)
    wait_until(stalled.is_set)
    wait_until(lambda: engine.is_leader, message="the renewal to land")
    db.orders.insert_one({"_id": "after"})
    wait_until(
        lambda: db.orders_tasks.count_documents({"sourceDocId": {"$in": ["during", "after"]}}) == 2,
        timeout=15,
        message="both documents planned",
    )


def test_history_lost_during_a_reconciliation_restarts_it_from_the_beginning(
    db: Database[Doc],
) -> None:
    # The reset happened on the stream reader's thread while the planner went on with
    # the old scan, which saved its checkpoint again (and could mark the task
    # reconciled); the new scan trusted that checkpoint and skipped every document
    # before it - including those changed while the history was lost.
    definition = build_definition({"task": "sync", "collection": "orders", "handler": _noop})
    registry = TaskRegistry()
    registry.add(definition)
    db.orders.insert_many([{"_id": i} for i in range(100)])
    globals_store = GlobalsStore(db, "_mongoreact_globals")

    def reconciler() -> tuple[Iterator[bool], list[Any]]:
        planned: list[Any] = []
        scan = Reconciler(
            registry=registry, task_store=TaskStore(db),
            reconciliation=globals_store.reconciliation, batch_size=10,
            should_stop=lambda: False, stopping=threading.Event(), epoch=1,
            superseded=lambda: None,
        ).run(lambda definition, ids: planned.extend(ids))  # fmt: skip
        return scan, planned

    old, _ = reconciler()
    for _ in range(5):
        assert next(old) is False  # half-way through
    globals_store.reconciliation.reset(epoch=1)  # the stream reader: history lost
    assert True not in list(old)  # the old scan goes on to its end, and is not finished
    assert reconciliation_key(definition) not in globals_store.reconciliation.reconciled()
    new, planned = reconciler()
    assert list(new)[-1] is True
    assert planned == list(range(100))  # from the beginning
    assert reconciliation_key(definition) in globals_store.reconciliation.reconciled()


def test_leader_writes_are_fenced_by_the_leader_epoch(db: Database[Doc]) -> None:
    # A deposed leader (an older epoch) must not move the stream position or a
    # reconciliation checkpoint back over its successor's.
    store = GlobalsStore(db, "_mongoreact_globals")
    assert store.position.enter_epoch(2)  # as each term begins
    assert store.position.save({"_data": "new"}, "b", epoch=2) is Saved.SAVED
    assert store.position.save({"_data": "old"}, "a", epoch=1) is Saved.REFUSED
    assert store.position.load() == {"_data": "new"}
    now = ObjectId()  # the scan's id
    generation = store.reconciliation.generation()
    assert store.reconciliation.save_checkpoint(
        "orders", ["t"], 50, now, generation=generation, epoch=2
    )
    assert not store.reconciliation.save_checkpoint(
        "orders", ["t"], 10, now, generation=generation, epoch=1
    )
    checkpoint = store.reconciliation.load_checkpoint("orders", ["t"], generation)
    assert checkpoint is not None and checkpoint.last_id == 50
    assert store.reconciliation.load_checkpoint("orders", ["t"], generation + 1) is None
    # A scan of an older generation cannot overwrite a newer one's checkpoint either.
    assert store.reconciliation.save_checkpoint(
        "orders", ["t"], 5, now, generation=generation + 1, epoch=2
    )
    assert not store.reconciliation.save_checkpoint(
        "orders", ["t"], 60, now, generation=generation, epoch=2
    )


def test_an_unresumable_stream_restarts_from_now_and_reconciles(
    make_engine: EngineFactory, db: Database[Doc], caplog: pytest.LogCaptureFixture
) -> None:
    # An error other than history loss (here an invalid resume token, as after a
    # restore) was retried from the same token forever: planning stalled silently.
    first = make_engine(concurrency=0)
    first.register(task="sync", collection="orders", handler=_noop, debounce=0)
    start(first, db)
    assert first.stop(timeout=10)
    globals_collection = db[first.settings.globals_collection]
    globals_collection.update_one({"_id": "planner"}, {"$set": {"resumeToken": {"_data": "zz"}}})
    db.orders.insert_one({"_id": "written while down"})
    second = make_engine(concurrency=0)
    second.register(task="sync", collection="orders", handler=_noop, debounce=0)
    with caplog.at_level(logging.WARNING, logger="mongoreact"):
        second.start()
        wait_until(
            lambda: db.orders_tasks.count_documents({"sourceDocId": "written while down"}),
            timeout=30,
            message="the document written while down to be planned",
        )
    restarts = second.measurements.snapshot()["counters"]["change_stream_restarts"]
    assert sum(row["value"] for row in restarts) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("cannot resume" in r.getMessage() for r in errors)
    db.orders.insert_one({"_id": "live"})  # and the new stream carries live events
    wait_until(lambda: db.orders_tasks.count_documents({"sourceDocId": "live"}))


def test_a_leader_replaced_before_its_first_save_leaves_a_position_to_resume_from(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the model-based test. A leader that opened its stream "from now" and was
    # replaced before it saved any position left its successor nothing to resume from:
    # the successor opened from *its* now (reconciliation was already done), and every
    # write in between was never planned.
    flush = Planner._flush

    def first_leader_plans_nothing(self: Planner) -> None:
        if self._settings.instance_id != "first":
            flush(self)

    monkeypatch.setattr(Planner, "_flush", first_leader_plans_nothing)
    first = make_engine(instance_id="first", concurrency=0)
    first.register(task="sync", collection="orders", handler=_noop, debounce=0)
    start(first, db)
    db.orders.insert_one({"_id": "between"})  # read by the first leader, never planned
    assert first.stop(timeout=10)
    second = make_engine(instance_id="second", concurrency=0)
    second.register(task="sync", collection="orders", handler=_noop, debounce=0)
    second.start()
    wait_until(
        lambda: db.orders_tasks.count_documents({"sourceDocId": "between"}),
        timeout=15,
        message="the write made under the first leader to be planned",
    )


def test_a_late_planning_pass_does_not_unmatch_a_record_another_pass_stamped(
    db: Database[Doc],
) -> None:
    # A deposed leader's planning pass, delayed by a network stall, finished after its
    # successor had planned the same document: seeing another stamp on the record, it
    # marked it as no longer matching, and the next re-plan (same values) took that for
    # a change and ran the completed version again (found by the chaos test, seed
    # 877187: four versions completed twice).
    store = TaskStore(db)
    definition = build_definition(
        {"task": "sync", "collection": "orders", "handler": _noop, "filter": {"paid": True}}
    )
    store.ensure_indexes(definition.tasks_collection)
    db.orders.insert_many([{"_id": 1, "paid": True}, {"_id": 2, "paid": True}])
    store.plan(definition, [1, 2], [])
    db.orders_tasks.update_many({}, {"$set": {"status": "completed"}})
    late_stamp = ObjectId()  # the late pass's: the successor's stamp is on the records
    db.orders.update_one({"_id": 2}, {"$set": {"paid": False}})  # 2 really stopped matching

    assert store.mark_unmatched(definition, [1, 2], [], late_stamp, epoch=0) == 1
    records = {r["sourceDocId"]: r for r in db.orders_tasks.find()}
    assert records[1]["matched"] is True and records[2]["matched"] is False
    store.plan(definition, [1], [])  # the same values again: nothing to run
    assert (db.orders_tasks.find_one({"sourceDocId": 1}) or {}).get("status") == "completed"


def test_a_restarted_stream_never_saves_a_position_of_the_old_one(
    db: Database[Doc], mongo_uri: str
) -> None:
    # The planner saves its position at most once a heartbeat. A position of the old
    # stream saved after the reader gave it up (history lost) and restarted from now
    # would send a successor back into the lost history: another restart, another full
    # reconciliation. The reader's "restarted" marker makes the planner drop it.
    definition = build_definition(
        {"task": "sync", "collection": "orders", "handler": _noop, "debounce": 0}
    )
    registry = TaskRegistry()
    registry.add(definition)
    globals_store = GlobalsStore(db, "_mongoreact_globals")
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    never = {"leader_heartbeat": 60_000, "leader_ttl": 120_000}  # no save falls due
    planner = Planner(
        settings=build_settings({"uri": mongo_uri, **never}),
        registry=registry, task_store=TaskStore(db), globals_store=globals_store,
        events=events, stream_open=threading.Event(), is_leader=lambda: True,
        on_planned=lambda definition: None, measurements=Measurements(), epoch=1,
    )  # fmt: skip
    TaskStore(db).ensure_indexes(definition.tasks_collection)
    db.orders.insert_many([{"_id": "old"}, {"_id": "new"}])

    def event(doc_id: str, token: str) -> tuple[str, Any]:
        return "event", {"ns": {"coll": "orders"}, "documentKey": {"_id": doc_id},
                         "operationType": "insert", "_id": {"_data": token}}  # fmt: skip

    events.put(event("old", "old-stream"))
    events.put(("restarted", None))
    planner.step()  # takes both, plans the batch
    assert db.orders_tasks.count_documents({"sourceDocId": "old"}) == 1  # still planned
    planner.on_stop()
    assert globals_store.position.load() is None  # but its position is not saved
    events.put(event("new", "new-stream"))
    for _ in range(100):  # each step waits for the batch to be due (a batch_window)
        planner.step()
        if db.orders_tasks.count_documents({"sourceDocId": "new"}):
            break
    planner.on_stop()
    assert globals_store.position.load() == {"_data": "new-stream"}


@pytest.mark.parametrize("how", ["deleted", "restored", "clock_back"])
def test_planning_goes_on_after_the_leader_document_is_deleted_or_restored(
    make_engine: EngineFactory, db: Database[Doc], how: str
) -> None:
    """Regression: a deleted or restored lease document started epochs from 1 again;
    the planner document held a higher one, so every save was refused, the planner
    restarted every heartbeat and the stream position never moved."""
    engine = make_engine(concurrency=0)
    engine.register(task="sync", collection="orders", handler=_noop, debounce=0)
    start(engine, db)
    globals_ = db["_mongoreact_globals"]
    if how == "deleted":  # an operator forcing a failover
        globals_.delete_one({"_id": "leader"})
    elif how == "restored":  # the globals restored from an old backup
        globals_.replace_one(
            {"_id": "leader"},
            {"instanceId": "old", "epoch": 1, "expiresAt": dt.datetime(2000, 1, 1)},
        )
    else:  # a fenced write from a server whose clock ran far ahead, then went back
        globals_.update_one({"_id": "planner"}, {"$set": {"leaderEpoch": 2**62}})
        globals_.delete_one({"_id": "leader"})
    wait_until(
        lambda: (globals_.find_one({"_id": "leader"}) or {}).get("instanceId") == engine.instance_id
    )
    db.orders.insert_one({"_id": "after"})
    wait_until(lambda: db.orders_tasks.count_documents({"sourceDocId": "after"}) == 1)
    lease = globals_.find_one({"_id": "leader"}) or {}
    wait_until(
        lambda: (globals_.find_one({"_id": "planner"}) or {}).get("leaderEpoch") == lease["epoch"],
        message="the stream position saved in the new epoch",
    )


def _counter(engine: Any, name: str) -> float:
    values = engine.measurements.snapshot()["counters"][name]
    return float(sum(v["value"] for v in values))


def test_a_lapsed_lease_renewed_in_the_same_term_keeps_planning_and_its_batch(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (overload): a renewal slower than leader_ttl retired the planner and
    dropped its unplanned batch; the lone instance then 'won' again, restarted planning
    from the saved position, and under a backlog kept throwing work away."""
    engine = make_engine(concurrency=0, leader_heartbeat=100, leader_ttl=500)
    engine.register(task="sync", collection="orders", handler=_noop, debounce=0)
    start(engine, db)
    planner = next(t for t in threading.enumerate() if t.name.startswith("mongoreact-planner"))
    acquire = LeaseStore.acquire
    slow = threading.Event()
    slow.set()

    def slow_once(self: LeaseStore, *args: Any) -> Any:
        if slow.is_set():
            slow.clear()
            db.orders.insert_one({"_id": "during"})
            threading.Event().wait(0.8)  # longer than leader_ttl: the lease lapses here
        return acquire(self, *args)

    monkeypatch.setattr(LeaseStore, "acquire", slow_once)
    wait_until(lambda: _counter(engine, "leader_lapses") == 1, message="a lapse")
    db.orders.insert_one({"_id": "after"})
    wait_until(
        lambda: db.orders_tasks.count_documents({"sourceDocId": {"$in": ["during", "after"]}}) == 2
    )
    assert planner.is_alive()  # the same planner thread: nothing restarted
    assert _counter(engine, "leader_elections") == 1
    assert _counter(engine, "leader_lock_losses") == 0


def test_a_changed_definition_never_resumes_or_finishes_an_older_ones_reconciliation(
    db: Database[Doc],
) -> None:
    """Regression (rolling deploy): v1 was stopped part-way through reconciling; v2, with
    a wider filter, resumed from v1's checkpoint and marked the task reconciled, so the
    documents below the checkpoint that only v2 matches were never planned. An old
    leader finishing v1's scan marked v2 reconciled too."""
    db.orders.insert_many([{"_id": i, "kind": "a" if i % 3 else "b"} for i in range(300)])
    globals_store = GlobalsStore(db, "_mongoreact_globals")
    tasks = TaskStore(db)
    tasks.ensure_indexes("orders_tasks")
    v1 = build_definition({"task": "t", "collection": "orders", "handler": _noop,
                           "filter": {"kind": "a"}})  # fmt: skip
    v2 = build_definition({"task": "t", "collection": "orders", "handler": _noop,
                           "filter": {"kind": {"$in": ["a", "b"]}}})  # fmt: skip

    def scan(definition: Any, epoch: int) -> Iterator[bool]:
        """A leader's reconciliation, planning as its planner does."""
        registry = TaskRegistry()
        registry.add(definition)
        reconciler = Reconciler(
            registry=registry, task_store=tasks, reconciliation=globals_store.reconciliation,
            batch_size=40,
            should_stop=lambda: False, stopping=threading.Event(), epoch=epoch,
            superseded=lambda: None,
        )  # fmt: skip

        def plan(definition: Any, ids: list[Any]) -> None:
            scanning = reconciler.scanning.get("orders")
            tasks.plan(definition, ids, [], epoch=epoch, scan=scanning)

        return reconciler.run(plan)

    old = scan(v1, epoch=1)
    for _ in range(3):
        assert next(old) is False  # v1 checkpointed at _id 119, then stopped
    new = scan(v2, epoch=2)  # the new leader
    assert next(new) is False  # v2 under way
    # The old leader goes on with v1's scan: refused (the new leader's epoch), and in any
    # case it could only mark v1's key.
    assert True not in list(old)
    assert reconciliation_key(v2) not in globals_store.reconciliation.reconciled()
    assert list(new)[-1] is True
    planned = {r["sourceDocId"] for r in db.orders_tasks.find({"matched": True})}
    assert planned == set(range(300))
    assert reconciliation_key(v2) in globals_store.reconciliation.reconciled()


def _fenced_store(db: Database[Doc]) -> tuple[TaskStore, Any]:
    store = TaskStore(db)
    definition = build_definition(
        {"task": "t", "collection": "orders", "handler": _noop, "watch_projection": {"v": 1}}
    )
    store.ensure_indexes(definition.tasks_collection)
    return store, definition


def test_a_deposed_leaders_late_marking_leaves_its_successors_record_alone(
    db: Database[Doc],
) -> None:
    """Regression: mark_unmatched is check-then-act. Leader A (epoch 1) read the source
    as deleted; the document came back and B (epoch 2) planned it; A's update then
    marked B's live pending record unmatched and deleted."""
    store, definition = _fenced_store(db)
    db.orders.insert_one({"_id": 1, "v": 1})
    store.plan(definition, [1], [], epoch=2)  # B plans the document that came back
    late = db.orders_tasks.update_many(  # A's marking, decided while it looked deleted
        pipelines.unmatched_filter("t", [1], [1], ObjectId(), 1),
        pipelines.unmatched_update([1], 1),
    )
    assert late.modified_count == 0
    record = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    assert record["matched"] is True and record["sourceDeletedAt"] is None
    # A's whole marking pass, and a late reconciliation's vanished marking, alike:
    db.orders.delete_one({"_id": 1})
    assert store.mark_unmatched(definition, [1], [1], ObjectId(), epoch=1) == 0
    assert store.mark_vanished(definition, ObjectId(), epoch=1) == 0
    assert store.mark_unmatched(definition, [1], [1], ObjectId(), epoch=2) == 1
    marked = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    # Marked gone (deleted), and stamped with the epoch: an older leader's late write
    # to it is refused from now on.
    assert marked["matched"] is False and marked["sourceDeletedAt"] is not None
    assert marked["planEpoch"] == 2


def test_a_deposed_leaders_late_planning_failure_leaves_its_successors_record_alone(
    db: Database[Doc],
) -> None:
    """Regression: a late record_planning_failure upsert turned the successor's pending
    record into a failed one with a stale error, so the fixed version never ran."""
    store, definition = _fenced_store(db)
    db.orders.insert_one({"_id": 1, "v": 1})
    store.plan(definition, [1], [], epoch=2)
    assert not store.record_planning_failure(definition, 1, "stale", epoch=1)
    record = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    assert record["status"] == "pending" and "planningError" not in record
    # A document no leader planned yet is parked as before.
    assert store.record_planning_failure(definition, 2, "poison", epoch=1)
    assert (db.orders_tasks.find_one({"sourceDocId": 2}) or {})["status"] == "failed"


def test_a_deposed_leaders_late_merge_does_not_roll_a_snapshot_back(db: Database[Doc]) -> None:
    """Regression (inferred race): A read version 1, B merged version 2; A's merge then
    rolled the record back to version 1, which failed the late-binding check (skipped)
    and version 2 was never handled."""
    store, definition = _fenced_store(db)
    db.orders.insert_one({"_id": 1, "v": 2})
    store.merge(definition, [1], epoch=2)  # B: version 2
    db.orders.update_one({"_id": 1}, {"$set": {"v": 1}})  # what A read, earlier
    store.merge(definition, [1], epoch=1)  # A's late merge
    record = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    assert record["lastObservedValues"] == {"v": 2} and record["planEpoch"] == 2
    store.merge(definition, [1], epoch=3)  # a later leader's pass applies as usual
    assert (db.orders_tasks.find_one({"sourceDocId": 1}) or {})["lastObservedValues"] == {"v": 1}


def test_a_deposed_stream_reader_cannot_reset_reconciliation_or_drop_the_position(
    db: Database[Doc],
) -> None:
    """Regression: a deposed reader reset reconciliation and forgot the saved position
    without a leadership check; its successor's scan was abandoned for good."""
    store = GlobalsStore(db, "_mongoreact_globals")
    assert store.position.enter_epoch(2)
    assert store.position.save({"_data": "b"}, "b", epoch=2) is Saved.SAVED
    generation = store.reconciliation.generation()
    assert not store.reconciliation.reset(epoch=1)
    assert not store.position.forget(epoch=1)
    assert store.reconciliation.generation() == generation
    assert store.position.load() == {"_data": "b"}
    # A new term stamps the planner's state before its first save: older writes refused.
    assert store.position.enter_epoch(3)
    assert store.position.save({"_data": "old"}, "b", epoch=2) is Saved.REFUSED
    assert store.reconciliation.reset(epoch=3)
    assert store.reconciliation.generation() == generation + 1


def test_a_record_planned_during_a_scan_is_not_marked_gone_whatever_the_clocks(
    db: Database[Doc],
) -> None:
    """Regression: a completed reconciliation marked gone every record planned before
    its scan began (by the server's clock) and not reached by it. Across a failover to
    a member whose clock is behind, a record a live event planned during the scan
    carried an earlier time, and a live record was marked deleted."""
    definition = build_definition({"task": "t", "collection": "orders", "handler": _noop})
    registry = TaskRegistry()
    registry.add(definition)
    tasks = TaskStore(db)
    tasks.ensure_indexes("orders_tasks")
    db.orders.insert_many([{"_id": i} for i in range(10)])
    db.orders_tasks.insert_one({"task": "t", "sourceDocId": 200, "matched": True,
                                "status": "completed"})  # its document is gone  # fmt: skip
    reconciler = Reconciler(
        registry=registry, task_store=tasks,
        reconciliation=GlobalsStore(db, "_mongoreact_globals").reconciliation,
        batch_size=5, should_stop=lambda: False, stopping=threading.Event(), epoch=1,
        superseded=lambda: None,
    )  # fmt: skip

    def plan(definition: Any, ids: list[Any]) -> None:
        tasks.plan(definition, ids, [], epoch=1, scan=reconciler.scanning.get("orders"))

    scan = reconciler.run(plan)
    assert next(scan) is False  # the first page (0-4) is planned
    db.orders.insert_one({"_id": -1})  # a live event, below the scan's position
    plan(definition, [-1])
    behind = dt.datetime(2000, 1, 1)  # the new primary's clock is far behind
    db.orders_tasks.update_one({"sourceDocId": -1}, {"$set": {"plannedAt": behind}})
    assert list(scan)[-1] is True
    records = {r["sourceDocId"]: r["matched"] for r in db.orders_tasks.find()}
    assert records[-1] is True and all(records[i] for i in range(10))
    assert records[200] is False


def test_a_reconciliation_state_gone_back_in_time_is_reconciled_again(db: Database[Doc]) -> None:
    """Regression (the model-based test): the globals restored from a backup took the
    reconciliation generation back to before a reset (history lost, the tasks
    collection dropped), with the old generation's tasks marked reconciled. The planner
    took the restored marks at their word and what the reset was for was never found."""
    definition = build_definition({"task": "t", "collection": "orders", "handler": _noop})
    registry = TaskRegistry()
    registry.add(definition)
    tasks = TaskStore(db)
    tasks.ensure_indexes("orders_tasks")
    state = GlobalsStore(db, "_mongoreact_globals").reconciliation
    reconciler = Reconciler(
        registry=registry, task_store=tasks, reconciliation=state, batch_size=5,
        should_stop=lambda: False, stopping=threading.Event(), epoch=1,
        superseded=lambda: None,
    )  # fmt: skip
    planned: list[Any] = []
    assert list(reconciler.run(lambda d, ids: planned.extend(ids))) == [True]
    backup = list(db["_mongoreact_globals"].find())  # generation 0, "t" reconciled
    assert state.reset(epoch=1)  # history lost: generation 1, nothing reconciled
    assert list(reconciler.run(lambda d, ids: planned.extend(ids))) == [True]
    db.orders.insert_many([{"_id": i} for i in range(3)])  # only a scan finds them
    db["_mongoreact_globals"].delete_many({})
    db["_mongoreact_globals"].insert_many(backup)
    assert list(reconciler.run(lambda d, ids: planned.extend(ids)))[-1] is True
    assert planned == [0, 1, 2]
    assert state.generation() == 1


def test_a_save_over_a_planner_document_gone_back_writes_nothing_until_reconciled(
    db: Database[Doc],
) -> None:
    """A planner document older than the term (restored from a backup) or gone: the
    save writes nothing and says so, so the reconciliation it may have lost is reset
    before any position lands on it (written first, a failure in between lost it)."""
    store = GlobalsStore(db, "_mongoreact_globals")
    assert store.position.enter_epoch(5)
    db["_mongoreact_globals"].update_one({"_id": "planner"}, {"$set": {"leaderEpoch": 4}})
    assert store.position.save({"_data": "x"}, "a", epoch=5) is Saved.WENT_BACK
    assert store.position.load() is None
    assert store.reconciliation.reset(epoch=5)  # stamps the term again
    assert store.position.save({"_data": "x"}, "a", epoch=5) is Saved.SAVED
    db["_mongoreact_globals"].delete_many({})  # deleted
    assert store.position.save({"_data": "y"}, "a", epoch=5) is Saved.WENT_BACK
