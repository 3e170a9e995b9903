"""``register(timeout=...)``: a handler past its time limit counts as failed, its lease
and slot are given back, ``ctx.cancelled`` tells it, its late result is discarded, and
the worker pool keeps its capacity (docs/handlers.md, "Time limits")."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pymongo.database import Database

from mongoreact import ConfigError, TaskContext, TaskLeaseLostError

from .conftest import EngineFactory
from .helpers import Doc, record, record_when, start, wait_until


def test_a_run_past_its_timeout_fails_and_the_pool_keeps_its_capacity(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    release = threading.Event()  # the hung handler ignores cancellation until the end
    seen: dict[str, object] = {}
    ran: list[str] = []

    def handler(ctx: TaskContext) -> None:
        ran.append(ctx.doc_id)
        if ctx.doc_id == "hung":
            release.wait(30)
            seen["cancelled"] = ctx.cancelled
            try:
                ctx.mark_completed()
            except TaskLeaseLostError as error:
                seen["late"] = error

    engine = make_engine(concurrency=1)
    engine.register(task="sync", collection="orders", handler=handler, debounce=0,
                    timeout="300ms",
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    try:
        db.orders.insert_one({"_id": "hung"})
        failed = record_when(db, "orders", "hung", lambda r: r["status"] == "failed", timeout=15)
        assert failed["lastError"].startswith("HandlerTimeoutError: task 'sync' for 'hung' ran")
        # One worker thread, still busy with the hung handler: a replacement runs the rest.
        db.orders.insert_many([{"_id": "a"}, {"_id": "b"}])
        wait_until(
            lambda: db.orders_tasks.count_documents({"status": "completed"}) == 2,
            timeout=15,
            message="others run while the hung handler holds its thread",
        )
    finally:
        release.set()
    wait_until(lambda: "late" in seen, message="the hung handler returned")
    assert seen["cancelled"] is True
    assert record(db, "orders", "hung")["status"] == "failed"  # the late result is discarded
    assert ran.count("hung") == 1


def test_the_retry_policy_applies_and_a_handler_can_stop_when_cancelled(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    stopped_early: list[float] = []

    def handler(ctx: TaskContext) -> None:
        began = time.monotonic()
        if ctx.cancellation.wait(10):  # a long step that notices the limit
            stopped_early.append(time.monotonic() - began)

    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=handler, debounce=0,
                    timeout=200,
                    retry_policy={"type": "fixed", "interval": 50, "max_attempts": 2})  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    failed = record_when(db, "orders", "o1", lambda r: r["status"] == "failed", timeout=15)
    assert failed["attempts"] == 2
    assert [h["status"] for h in failed["executionHistory"]] == ["failed", "failed"]
    wait_until(lambda: len(stopped_early) == 2)
    assert all(seconds < 2 for seconds in stopped_early)
    assert engine.health()["healthy"]


def test_a_run_within_its_timeout_is_untouched(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=lambda ctx: None, debounce=0,
                    timeout="5s")  # fmt: skip
    start(engine, db)
    db.orders.insert_many([{"_id": i} for i in range(20)])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "completed"}) == 20)


@pytest.mark.parametrize("bad", [0, "0s", "-1s", "soon", True, "10"])
def test_bad_timeouts_are_refused(make_engine: EngineFactory, bad: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        make_engine().register(task="t", collection="c", handler=lambda ctx: None, timeout=bad)
    assert caught.value.option == "timeout"
