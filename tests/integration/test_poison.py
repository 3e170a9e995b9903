"""A document whose filter or projection fails on the server must not stop planning."""

from __future__ import annotations

from pymongo.database import Database

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record_when, start, wait_until


def test_a_poison_document_is_parked_and_the_rest_is_planned(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(
        task="bill", collection="orders", handler=recorder, debounce=0,
        filter={"$expr": {"$gt": [{"$add": ["$amount", 1]}, 0]}},  # fails on a string
    )  # fmt: skip
    start(engine, db)
    db.orders.insert_many(
        [{"_id": f"ok{i}", "amount": i} for i in range(5)]
        + [{"_id": "poison", "amount": "twelve"}]
        + [{"_id": f"ok{i}", "amount": i} for i in range(5, 10)]
    )
    wait_until(lambda: recorder.count() == 10, message="the ten good orders to run")
    parked = record_when(db, "orders", "poison", lambda r: r["status"] == "failed")
    assert parked["lastError"].startswith("planning failed: ")
    assert parked["planningError"]
    assert parked["nextRunAt"] is None
    # Planning goes on for later writes too.
    db.orders.insert_one({"_id": "later", "amount": 3})
    wait_until(lambda: recorder.count("later") == 1)
    # Once the document is fixed it plans cleanly and runs.
    db.orders.update_one({"_id": "poison"}, {"$set": {"amount": 12}})
    wait_until(lambda: recorder.count("poison") == 1)
    # The handler has run; its result is written just after (by the finalizer).
    fixed = record_when(db, "orders", "poison", lambda r: r["status"] != "processing")
    assert fixed["status"] == "completed"
    assert "planningError" not in fixed
