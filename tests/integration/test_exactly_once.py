"""The exactly-once pattern of docs/helpers.md under concurrency: the business write and
the completion commit together, so each document's effect happens exactly once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from mongoreact import TaskContext, TaskLeaseLostError

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until


@pytest.mark.slow
def test_transactional_handlers_take_effect_exactly_once_at_concurrency_4(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine(concurrency=4)
    errors: list[str] = []
    lock = threading.Lock()

    def invoice(ctx: TaskContext) -> None:
        def work(session: Any) -> None:
            order = ctx.get_document(session=session)
            engine.database.invoices.update_one(
                {"_id": order["_id"]}, {"$inc": {"effects": 1}}, upsert=True, session=session
            )
            ctx.mark_completed(session=session)

        try:
            engine.with_transaction(work)
        except Exception as error:
            with lock:
                errors.append(repr(error))
            raise

    engine.register(task="invoice", collection="orders", handler=invoice, debounce=0)
    start(engine, db)
    db.orders.insert_many([{"_id": i, "total": i} for i in range(40)])
    wait_until(
        lambda: db.orders_tasks.count_documents({"status": "completed"}) == 40,
        timeout=90,
        message="every record completed",
    )
    effects = {d["_id"]: d["effects"] for d in db.invoices.find()}
    assert effects == dict.fromkeys(range(40), 1), (effects, errors[:5])


def test_mark_completed_after_the_lease_was_lost_aborts_the_transaction(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: the stale run's transaction committed its business write although
    another worker had re-claimed (and completed) the record: two effects."""
    engine = make_engine()
    raised: list[BaseException] = []

    def invoice(ctx: TaskContext) -> None:
        # Another worker takes the record over while this run is still going (its lease
        # expired): a new claim id on the record, then that worker's completion.
        db.orders_tasks.update_one(
            {"sourceDocId": ctx.doc_id},
            {"$set": {"claimId": ObjectId(), "status": "completed", "nextRunAt": None}},
        )

        def work(session: Any) -> None:
            engine.database.invoices.update_one(
                {"_id": ctx.doc_id}, {"$inc": {"effects": 1}}, upsert=True, session=session
            )
            ctx.mark_completed(session=session)

        try:
            engine.with_transaction(work)
        except TaskLeaseLostError as error:
            raised.append(error)
            raise

    engine.register(task="invoice", collection="orders", handler=invoice, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": 1})
    wait_until(lambda: raised, message="the stale run to reach mark_completed")
    assert db.invoices.count_documents({}) == 0  # the transaction aborted
    record = db.orders_tasks.find_one({"sourceDocId": 1})
    assert record is not None and record["status"] == "completed"  # the other worker's
