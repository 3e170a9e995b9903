"""The guards in the store's server-side filters and pipelines, each on its own: the
late-binding check, the orphan filter, planning failures on running records, the lease
renewal's fence, the attempt reset on a data change. (Each was a surviving mutant of a
mutation spot check: a test that fails when the guard is dropped.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from mongoreact.clock import as_utc
from mongoreact.config.definition import TaskDefinition, build_definition
from mongoreact.records import ClaimedTask
from mongoreact.store.globals import GlobalsStore, Saved
from mongoreact.store.slots import SlotStore
from mongoreact.store.tasks import TaskStore

from .helpers import Doc

OLD = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


def _noop(_ctx: Any) -> None:
    pass


def _store(db: Database[Doc], **options: Any) -> tuple[TaskStore, TaskDefinition]:
    definition = build_definition(
        {"task": "t", "collection": "orders", "handler": _noop, "filter": {"paid": True},
         "watch_projection": {"v": 1}, **options}
    )  # fmt: skip
    store = TaskStore(db)
    store.ensure_indexes(definition.tasks_collection)
    return store, definition


def _record(db: Database[Doc], **fields: Any) -> Doc:
    record = {"_id": ObjectId(), "task": "t", "sourceDocId": 1, "status": "pending",
              "attempts": 0, "matched": True, "lastObservedValues": {"v": 1}, **fields}  # fmt: skip
    db.orders_tasks.insert_one(record)
    return record


@pytest.mark.parametrize(
    ("source", "qualifies"),
    [
        ({"_id": 1, "v": 1, "paid": True}, True),
        ({"_id": 1, "v": 2, "paid": True}, False),  # the watched values changed
        ({"_id": 1, "v": 1, "paid": False}, False),  # it no longer matches the filter
    ],
)
def test_the_late_binding_read_checks_both_the_filter_and_the_watched_values(
    db: Database[Doc], source: Doc, qualifies: bool
) -> None:
    store, definition = _store(db)
    record = _record(db)
    db.orders.insert_one(source)
    assert (store.fetch_source(definition, record) is not None) is qualifies
    assert bool(store.fetch_sources(definition, [record])) is qualifies


@pytest.mark.parametrize("status", ["processing", "processing_dirty"])
def test_cleanup_never_deletes_a_running_record(db: Database[Doc], status: str) -> None:
    store, definition = _store(db)
    orphan = {"matched": False, "sourceDeletedAt": OLD, "updatedAt": OLD, "lastFinalizedAt": OLD}
    _record(db, status=status, **orphan)
    _record(db, sourceDocId=2, status="completed", **orphan)
    assert store.delete_orphans(definition, dt.datetime.now(dt.timezone.utc), 10) == 1
    assert db.orders_tasks.find_one({"sourceDocId": 1}) is not None


def test_a_planning_failure_leaves_a_running_records_status_and_lease(db: Database[Doc]) -> None:
    store, definition = _store(db)
    lease = dt.datetime(2100, 1, 1)
    _record(db, status="processing", nextRunAt=lease)
    assert store.record_planning_failure(definition, 1, "bad $add", epoch=1)
    record = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    assert record["status"] == "processing" and record["nextRunAt"] == lease
    assert record["planningError"] == "bad $add" and record["planEpoch"] == 1
    assert record.get("lastError") is None  # the run's own outcome is still to come


def test_a_planning_failure_parks_a_new_record_as_failed(db: Database[Doc]) -> None:
    store, definition = _store(db)
    assert store.record_planning_failure(definition, 7, "bad $add", epoch=1)
    record = db.orders_tasks.find_one({"sourceDocId": 7}) or {}
    assert (record["status"], record["nextRunAt"]) == ("failed", None)
    assert record["lastError"] == "planning failed: bad $add"
    assert (record["attempts"], record["matched"]) == (0, True)
    for field in ("createdAt", "updatedAt", "plannedAt", "lastFinalizedAt"):
        assert isinstance(record[field], dt.datetime), field


def test_a_lease_renewal_is_fenced_by_the_claim_not_the_record(db: Database[Doc]) -> None:
    store, _ = _store(db)
    lease = dt.datetime(2000, 1, 1)
    record = _record(db, status="processing", claimId=ObjectId(), nextRunAt=lease)
    stale = ClaimedTask(record=record, claim_id=ObjectId(), tasks_collection="orders_tasks")
    assert store.renew([stale], dt.timedelta(seconds=60)) == {stale.claim_id}
    assert (db.orders_tasks.find_one({"sourceDocId": 1}) or {})["nextRunAt"] == lease


@pytest.mark.parametrize("reset", [True, False])
def test_a_data_change_resets_the_attempts_when_asked(db: Database[Doc], reset: bool) -> None:
    store, definition = _store(
        db, retry_policy={"type": "fixed", "interval": "1s", "reset_retries_on_data_change": reset}
    )
    _record(db, status="failed", attempts=3, firstErrorAt=OLD)
    db.orders.insert_one({"_id": 1, "v": 2, "paid": True})
    store.merge(definition, [1], epoch=1)
    record = db.orders_tasks.find_one({"sourceDocId": 1}) or {}
    assert record["status"] == "pending"
    first_error = record["firstErrorAt"]
    assert record["attempts"] == (0 if reset else 3)
    assert (first_error is None) if reset else first_error.replace(tzinfo=dt.timezone.utc) == OLD


def test_a_parked_record_counts_as_reached_by_the_scan_under_way(db: Database[Doc]) -> None:
    """Regression (review): a parked poison document's record never carried the scan's
    id, so every complete reconciliation marked it gone though its document exists."""
    store, definition = _store(db)
    scan = ObjectId()
    assert store.record_planning_failure(definition, 7, "bad $add", epoch=1, scan=scan)
    assert store.mark_vanished(definition, scan, epoch=1) == 0


def test_a_record_of_another_definition_is_claimable_after_a_grace(db: Database[Doc]) -> None:
    """Records planned under a definition no instance runs any more (a removed canary, a
    rollback) wait FOREIGN_GRACE for one, then any instance takes them."""
    store, _ = _store(db)
    now = dt.datetime.now(dt.timezone.utc)
    _record(db, planTrigger="other", nextRunAt=now - dt.timedelta(seconds=5))
    _record(db, sourceDocId=2, planTrigger="other", nextRunAt=now - dt.timedelta(minutes=2))
    claimed = store.claim_many(
        "orders_tasks", ["t"], now=now, instance_id="i", lease=dt.timedelta(seconds=60),
        limit=5, triggers=["mine"],
    )  # fmt: skip
    assert [c.record["sourceDocId"] for c in claimed.claims] == [2]


def test_a_concurrency_slot_of_a_holder_that_died_is_taken_over(db: Database[Doc]) -> None:
    """Mutation testing: expired holders were not asserted to give their slot up (a
    crashed instance would have held its max_concurrency slots for good)."""
    slots = SlotStore(db, "_mongoreact_globals")
    lease = dt.timedelta(minutes=1)
    gone = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    db["_mongoreact_globals"].insert_one(
        {"_id": "slots:t", "holders": [{"id": ObjectId(), "expiresAt": gone}]}
    )
    live = ObjectId()
    assert slots.acquire("t", live, 1, lease)  # the dead holder's slot
    assert not slots.acquire("t", ObjectId(), 1, lease)  # the live one's is kept
    (document,) = db["_mongoreact_globals"].find({"_id": "slots:t"})
    assert [holder["id"] for holder in document["holders"]] == [live]


def test_the_cleanup_recheck_marks_only_documents_that_stopped_matching(db: Database[Doc]) -> None:
    """The re-check of a clock-reading filter (review finding: a document the filter
    fails on stopped every cleanup); records planned lately are left to the planner."""
    store, definition = _store(db, filter={"$expr": {"$gt": [{"$toDate": "$expiresAt"}, "$$NOW"]}})
    now = dt.datetime.now(dt.timezone.utc)
    long_ago = now - dt.timedelta(days=1)
    db.orders.insert_many([
        {"_id": "expired", "expiresAt": now - dt.timedelta(hours=1)},
        {"_id": "open", "expiresAt": now + dt.timedelta(hours=1)},
        {"_id": "broken", "expiresAt": "not a date"},  # $toDate fails on it
        {"_id": "replanned", "expiresAt": now - dt.timedelta(hours=1)},
    ])  # fmt: skip
    idle = {"status": "completed", "updatedAt": long_ago, "plannedAt": long_ago,
            "lastFinalizedAt": long_ago, "planStamp": ObjectId()}  # fmt: skip
    for doc_id in ("expired", "open", "broken"):
        _record(db, sourceDocId=doc_id, **idle)
    _record(db, sourceDocId="replanned", **{**idle, "plannedAt": now})
    marked, after = store.unmatch_by_time(definition, now - dt.timedelta(minutes=1), None, 10)
    assert (marked, after) == (1, None)
    unmatched = {r["sourceDocId"] for r in db.orders_tasks.find({"matched": False})}
    assert unmatched == {"expired"}


@pytest.mark.parametrize("many", [False, True])
def test_a_claim_records_when_its_run_started(db: Database[Doc], many: bool) -> None:
    """Mutation testing: a claim that no longer set ``startedAt`` went unnoticed (the
    dashboard's running time, stuck-run detection read it)."""
    store, definition = _store(db)
    _record(db, nextRunAt=OLD)
    before = as_utc(db.client.admin.command("hello")["localTime"])
    options: dict[str, Any] = {"now": dt.datetime.now(dt.timezone.utc), "instance_id": "i",
                               "lease": dt.timedelta(minutes=1)}  # fmt: skip
    if many:  # the claimed record is worked out locally, not read back
        claims = store.claim_many(definition.tasks_collection, ["t"], limit=5, **options).claims
        claimed = claims[0] if len(claims) == 1 else None
    else:
        claimed = store.claim(definition.tasks_collection, ["t"], **options)
    assert claimed is not None
    stored = (db.orders_tasks.find_one({"sourceDocId": 1}) or {}).get("startedAt")
    for started in (stored, claimed.record.get("startedAt")):
        assert isinstance(started, dt.datetime)
        assert as_utc(started) >= before - dt.timedelta(seconds=1)


def test_a_reconciliation_reset_stamps_its_epoch_on_a_fresh_planner_document(
    db: Database[Doc],
) -> None:
    """Mutation testing: the epoch a reset stamps must be the number itself, on a planner
    document that had none, or every later fenced write compares against garbage."""
    state = GlobalsStore(db, "_mongoreact_globals")
    assert state.reconciliation.reset(epoch=3)
    assert (state.position.document() or {}).get("leaderEpoch") == 3
    assert state.position.save({"_data": "x"}, "i", epoch=3) is Saved.SAVED
    assert state.position.save({"_data": "y"}, "i", epoch=2) is Saved.REFUSED
