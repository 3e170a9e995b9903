"""Helpers: locks, transactions with post-commit hooks, batches, signals, test helpers."""

from __future__ import annotations

import datetime as dt
import functools
import os
import signal
import threading

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.database import Database

import mongoreact
from mongoreact import (
    LockAlreadyAcquiredError,
    MongoReactError,
    ReactiveTasks,
    TaskContext,
    process_in_batches,
    register_post_commit_hook,
)
from mongoreact.testing import FAST_SETTINGS, assert_no_task_errors, wait_until_idle

from .conftest import EngineFactory
from .helpers import Doc, record, start, wait_until

# Locks.


def test_a_lock_excludes_others_until_released(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with engine.with_lock("account-42", ttl="2s", wait=0) as held:
        assert held.fencing_token == 1
        with pytest.raises(LockAlreadyAcquiredError):
            engine.with_lock("account-42", wait="300ms").acquire()
    with engine.with_lock("account-42", wait=0) as again:
        assert again.fencing_token == 2


def test_a_waiting_acquirer_gets_the_lock_when_it_is_released(make_engine: EngineFactory) -> None:
    engine = make_engine()
    first = engine.with_lock("k", ttl="5s")
    first.acquire()
    threading.Timer(0.3, first.release).start()
    with engine.with_lock("k", wait="5s") as second:
        assert second.fencing_token == 2


def test_a_held_lock_is_renewed_past_its_ttl(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = make_engine()
    with engine.with_lock("long", ttl="500ms") as held:
        threading.Event().wait(1.5)  # three times the ttl, renewed every 100 ms
        assert not held.lost
        with pytest.raises(LockAlreadyAcquiredError):
            engine.with_lock("long", wait=0).acquire()


def test_an_expired_holder_cannot_renew_or_release_the_new_holders_lock(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    stale = engine.with_lock("k", ttl="10s")
    stale.acquire()
    # The holder pauses; its lock expires and someone else takes it.
    db["_mongoreact_locks"].update_one(
        {"_id": "k"}, {"$set": {"expiresAt": dt.datetime(1970, 1, 1)}}
    )
    fresh = engine.with_lock("k", ttl="10s", wait=0)
    fresh.acquire()
    wait_until(lambda: stale.lost, timeout=5, message="the stale holder to notice")
    stale.release()
    assert db["_mongoreact_locks"].find_one({"_id": "k"})["token"] == fresh.fencing_token  # type: ignore[index]
    fresh.release()
    assert "lockId" not in db["_mongoreact_locks"].find_one({"_id": "k"})  # type: ignore[operator]


def test_with_lock_decorates_a_function(make_engine: EngineFactory) -> None:
    engine = make_engine()

    @engine.with_lock("report")
    def build() -> str:
        with pytest.raises(LockAlreadyAcquiredError):
            engine.with_lock("report", wait=0).acquire()
        return "done"

    assert build() == "done"
    assert build() == "done"  # released in between


# Transactions.


def test_post_commit_hooks_run_once_after_the_commit(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    calls: list[str] = []
    engine.database.accounts.drop()  # connects the instance (no start needed)

    def work(session: ClientSession) -> str:
        engine.database.accounts.insert_one({"_id": "a", "balance": 10}, session=session)
        register_post_commit_hook(session, lambda: calls.append("email sent"))
        return "ok"

    assert engine.with_transaction(work) == "ok"
    assert calls == ["email sent"]
    assert db.accounts.find_one({"_id": "a"}) == {"_id": "a", "balance": 10}


def test_an_aborted_transaction_writes_nothing_and_runs_no_hook(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    calls: list[str] = []
    engine.database.accounts.drop()

    def work(session: ClientSession) -> None:
        engine.database.accounts.insert_one({"_id": "b"}, session=session)
        register_post_commit_hook(session, lambda: calls.append("hook"))
        raise ValueError("business rule")

    with pytest.raises(ValueError, match="business rule"):
        engine.with_transaction(work)
    assert calls == [] and db.accounts.find_one({"_id": "b"}) is None
    with engine.database.client.start_session() as session, pytest.raises(MongoReactError):
        register_post_commit_hook(session, lambda: None)


def test_a_handler_completes_its_task_in_its_own_transaction(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()

    def handler(ctx: TaskContext) -> None:
        def work(session: ClientSession) -> None:
            order = ctx.get_document(session=session)
            engine.database.invoices.insert_one({"_id": order["_id"]}, session=session)
            ctx.mark_completed(session=session)

        engine.with_transaction(work)
        raise RuntimeError("after the commit: the task stays completed")

    engine.register(task="invoice", collection="orders", handler=handler, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "o1"})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    wait_until(lambda: not engine.count_tasks(status=["processing", "processing_dirty"]))
    task_record = record(db, "orders", "o1")
    assert task_record["status"] == "completed" and task_record["lastError"] is None
    assert db.invoices.count_documents({}) == 1


# Batches.


def test_process_in_batches_reads_and_writes_in_bounded_batches(db: Database[Doc]) -> None:
    db.items.insert_many([{"_id": i, "n": i} for i in range(25)])
    batches: list[int] = []

    def write(ops: list[UpdateOne]) -> None:
        batches.append(len(ops))
        db.items.bulk_write(ops)

    processed, executed = process_in_batches(
        db.items, {"n": {"$gte": 5}},
        lambda doc: UpdateOne({"_id": doc["_id"]}, {"$set": {"double": doc["n"] * 2}}),
        write, batch_size=8,
    )  # fmt: skip
    assert (processed, executed, batches) == (20, 20, [8, 8, 4])
    assert db.items.count_documents({"double": {"$exists": True}}) == 20
    processed, executed = process_in_batches(
        db.items, [{"$match": {"n": {"$lt": 3}}}], lambda doc: None, write, batch_size=8
    )
    assert (processed, executed) == (3, 0)


# Signals and test helpers.


def test_install_signal_handlers_stops_on_sigterm(
    mongo_uri: str, database_name: str, db: Database[Doc]
) -> None:
    engine = mongoreact.init(uri=mongo_uri, database=database_name, **FAST_SETTINGS)
    engine.register(task="t", collection="c", handler=lambda ctx: None, debounce=0)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        start(engine, db)
        mongoreact.install_signal_handlers(timeout=5)
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # the handler runs in this (main) thread
        assert exited.value.code == 128 + signal.SIGTERM
        assert not engine.is_running
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        engine.stop(timeout=5)


def test_wait_until_idle_and_assert_no_task_errors(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    def handler(ctx: TaskContext) -> None:
        if ctx.doc_id == "bad":
            raise ValueError("nope")

    engine: ReactiveTasks = make_engine()
    engine.register(task="t", collection="c", handler=handler, debounce=100,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    db.c.insert_many([{"_id": "good"}, {"_id": "bad"}])
    wait_until(lambda: engine.count_tasks() == 2)
    wait_until_idle(engine)
    assert engine.count_tasks(status=["completed", "failed"]) == 2
    with pytest.raises(AssertionError, match=r"- t 'bad' \[failed\]: ValueError: nope"):
        assert_no_task_errors(engine)


# The documented example (docs/helpers.md), repeated: right after a write nothing may be
# planned yet, so a helper that waits for quiet returned before the runs. It must wait
# until the writes before the call are planned and their runs are over.
TRIALS = 5


def _record_run(ran: list[object], ctx: TaskContext) -> None:
    ran.append(ctx.doc_id)


@pytest.mark.parametrize(("tasks", "debounce"), [(1, 0), (3, 0), (2, 300)])
def test_wait_until_idle_right_after_a_write_waits_for_every_run(
    mongo_uri: str, mongo_client: MongoClient[Doc], tasks: int, debounce: int
) -> None:
    for trial in range(TRIALS):
        name = f"idle_{os.getpid()}_{trial}_{tasks}"
        ran: list[object] = []
        app = ReactiveTasks(uri=mongo_uri, database=name, **FAST_SETTINGS)
        for n in range(tasks):
            app.register(task=f"welcome{n}", collection="users", debounce=debounce,
                         handler=functools.partial(_record_run, ran))  # fmt: skip
        try:
            with app:
                app.database.users.insert_one({"_id": trial})
                wait_until_idle(app)
                assert ran == [trial] * tasks, f"trial {trial}: {ran}"
                app.database.users.update_one({"_id": trial}, {"$set": {"seen": True}})
                wait_until_idle(app)
                assert len(ran) == 2 * tasks, f"trial {trial}: {ran}"
                assert_no_task_errors(app)
        finally:
            mongo_client.drop_database(name)


def test_wait_until_idle_fails_when_nothing_plans(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.register(task="t", collection="c", handler=lambda ctx: None)
    engine.database.c.insert_one({"_id": 1})  # never started: nothing will plan it
    with pytest.raises(AssertionError, match="had not planned the writes"):
        wait_until_idle(engine, timeout=0.5)
