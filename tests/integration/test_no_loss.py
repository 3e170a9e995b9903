"""Regression tests for the ways work could be lost (issue "Nothing is lost").

Each test fails on the code before its fix; the comment on each says what was lost.
"""

from __future__ import annotations

from pymongo.database import Database

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
