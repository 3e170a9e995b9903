"""The small stores, each method on its own against the server: cron task documents,
concurrency slots, the audit log and the leader lease's release. (Each test was a
surviving mutant of the mutation sample in docs/reliability.md: the behaviour was only
reached through a subprocess or not asserted at all.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from mongoreact.store.audit import AuditStore
from mongoreact.store.cron import CRON_COLLECTION, CronStore
from mongoreact.store.globals import GlobalsStore
from mongoreact.store.slots import SlotStore

from .helpers import Doc

PAST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
MINUTE = dt.timedelta(minutes=1)


def _server_now(db: Database[Doc]) -> dt.datetime:
    now: dt.datetime = db.client.admin.command("hello")["localTime"]
    return now.replace(tzinfo=dt.timezone.utc) if now.tzinfo is None else now


def _utc(value: Any) -> dt.datetime:
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


# Cron tasks.


def test_a_cron_claim_records_the_instance_that_runs_it(db: Database[Doc]) -> None:
    store = CronStore(db)
    store.publish("nightly", "every night", PAST)
    claimed = store.claim(["nightly"], "app-1", MINUTE)
    assert claimed is not None and claimed[0] == "nightly"
    assert (store.last_run("nightly") or {}).get("instanceId") == "app-1"


def test_a_requested_run_is_claimed_before_a_task_that_is_merely_due(db: Database[Doc]) -> None:
    store = CronStore(db)
    store.publish("due", "every minute", PAST)
    store.publish("asked", "every year", FUTURE)
    assert store.request_run("asked") is not None
    claimed = store.claim(["due", "asked"], "app-1", MINUTE)
    assert claimed is not None and claimed[0] == "asked"


def test_a_cron_lease_is_renewed_only_by_its_holder(db: Database[Doc]) -> None:
    store = CronStore(db)
    store.publish("nightly", "every night", PAST)
    claimed = store.claim(["nightly"], "app-1", dt.timedelta(seconds=1))
    assert claimed is not None
    name, lock_id = claimed
    assert not store.renew(name, ObjectId(), dt.timedelta(hours=1))
    assert store.renew(name, lock_id, dt.timedelta(hours=1))
    locked_until = _utc((db[CRON_COLLECTION].find_one({"_id": name}) or {})["lockedUntil"])
    assert locked_until > _server_now(db) + dt.timedelta(minutes=50)


def test_a_cron_finish_says_whether_the_lease_was_still_its_own(db: Database[Doc]) -> None:
    store = CronStore(db)
    store.publish("nightly", "every night", PAST)
    claimed = store.claim(["nightly"], "app-1", MINUTE)
    assert claimed is not None
    name, lock_id = claimed
    assert not store.finish(name, ObjectId(), FUTURE, None)
    assert store.finish(name, lock_id, FUTURE, "boom")
    assert (store.last_run(name) or {}).get("error") == "boom"


def test_last_run_is_the_newest_entry_of_the_run_log(db: Database[Doc]) -> None:
    store = CronStore(db)
    store.publish("nightly", "every night", PAST)
    for instance, error in (("app-1", "first"), ("app-2", None)):
        claimed = store.claim(["nightly"], instance, MINUTE)
        assert claimed is not None
        assert store.finish(*claimed, PAST, error)
    last = store.last_run("nightly") or {}
    assert last.get("instanceId") == "app-2" and last.get("error") is None
    assert last.get("finishedAt") is not None


# Concurrency slots.


def test_a_slot_renewal_extends_only_the_slots_named(db: Database[Doc]) -> None:
    store = SlotStore(db, "globals")
    mine, theirs = ObjectId(), ObjectId()
    assert store.acquire("t", mine, 2, dt.timedelta(seconds=5))
    assert store.acquire("t", theirs, 2, dt.timedelta(seconds=5))
    store.renew("t", [mine], dt.timedelta(hours=1))
    holders = {h["id"]: _utc(h["expiresAt"]) for h in (db.globals.find_one({}) or {})["holders"]}
    now = _server_now(db)
    assert holders[mine] > now + dt.timedelta(minutes=50)
    assert holders[theirs] < now + dt.timedelta(minutes=1)


def test_an_expired_slot_is_taken_over_and_a_live_one_is_not(db: Database[Doc]) -> None:
    store = SlotStore(db, "globals")
    live, late = ObjectId(), ObjectId()
    db.globals.insert_one({"_id": "slots:t", "holders": [{"id": ObjectId(), "expiresAt": PAST}]})
    assert store.acquire("t", live, 1, MINUTE)  # the dead holder's slot frees itself
    assert not store.acquire("t", late, 1, MINUTE)  # but a live holder's does not


# The audit log.


def test_the_audit_log_keeps_who_did_what_newest_first(db: Database[Doc]) -> None:
    store = AuditStore(db, "globals")
    store.record(actor="ann", role="operator", action="retry", scope={"task": "t"},
                 count=3, via="cli")  # fmt: skip
    store.record(actor="bob", role="operator", action="discard",
                 scope={"filter": {"$gt": 1}}, count=1, via="dashboard")  # fmt: skip
    newest = store.recent(1)
    assert len(newest) == 1 and "_id" not in newest[0]
    entry = newest[0]
    assert (entry["actor"], entry["role"], entry["action"], entry["count"], entry["via"]) == (
        "bob", "operator", "discard", 1, "dashboard"
    )  # fmt: skip
    assert entry["scope"] == '{"filter": {"$gt": 1}}' and isinstance(entry["at"], dt.datetime)
    assert [e["actor"] for e in store.recent(10)] == ["bob", "ann"]


# The leader lease.


def test_a_released_lease_is_free_at_once(db: Database[Doc]) -> None:
    lease = GlobalsStore(db, "globals").lease
    assert lease.acquire("app-1", dt.timedelta(hours=1)).holder == "app-1"
    lease.release("app-2")  # not the holder: nothing changes
    assert lease.acquire("app-3", dt.timedelta(hours=1)).holder == "app-1"
    lease.release("app-1")
    assert lease.acquire("app-3", dt.timedelta(hours=1)).holder == "app-3"


def test_a_raised_lease_epoch_is_at_least_the_server_clock(db: Database[Doc]) -> None:
    """The highest epoch read from the globals misses the records' ``planEpoch``: a
    raise only to one above it could stay below what the leaders in between planned
    (review of the restore handling)."""
    lease = GlobalsStore(db, "globals").lease
    lease.acquire("app-1", dt.timedelta(hours=1))
    db.globals.update_one({"_id": "leader"}, {"$set": {"epoch": 3}})  # restored
    raised = lease.raise_epoch("app-1", 3, 4)
    assert raised is not None
    now_ms = int(_server_now(db).timestamp() * 1000)
    assert raised.epoch >= now_ms - 1000
    assert lease.raise_epoch("app-1", 3, 4) is None  # no longer in epoch 3
