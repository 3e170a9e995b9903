"""An application process for the fault tests: one task over ``items``.

Run as ``python -m tests.fault.app --uri URI --database DB --instance NAME``. The handler
records each run (with its claim id and pid) in ``runs`` before doing its "work", so a
run cut short by a kill is still counted. With ``--versions`` the task watches the
item's ``v`` and each run records the version it read through ``get_document()``;
``--fail-percent`` makes that share of runs fail (and be retried). With
``--transactional`` the handler's effect is a write in ``effects`` (one document per item
and version, counted) committed together with the task's completion
(``ctx.mark_completed(session=...)``): each effect must be counted exactly once.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
from typing import Any

from pymongo import MongoClient

from mongoreact import ReactiveTasks, TaskContext
from mongoreact.store.globals import ReconciliationStore


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--handler-ms", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--filter-mod", type=int, default=1)
    parser.add_argument("--checkpoint-pause-ms", type=int, default=0)
    parser.add_argument("--versions", action="store_true")
    parser.add_argument("--fail-percent", type=float, default=0.0)
    parser.add_argument("--transactional", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(threadName)s %(name)s %(message)s",
    )
    client: MongoClient[dict[str, Any]] = MongoClient(args.uri)
    runs = client[args.database].runs
    work = threading.Event()  # never set: the handler's "work" is a timed wait

    def transactional(ctx: TaskContext) -> None:
        def effect(session: Any) -> None:
            version = ctx.get_document(session=session).get("v")
            # Outside the transaction, so counted even when it aborts; once per claim (the
            # transaction may be retried).
            runs.update_one(
                {"_id": ctx.record["claimId"]},
                {"$setOnInsert": {"docId": ctx.doc_id, "claimId": ctx.record["claimId"],
                                  "pid": os.getpid(), "v": version}},
                upsert=True,
            )  # fmt: skip
            # Through the engine's client: the session belongs to it.
            engine.database.effects.update_one(
                {"_id": f"{ctx.doc_id}:{version}"}, {"$inc": {"count": 1}}, upsert=True,
                session=session,
            )  # fmt: skip
            work.wait(args.handler_ms / 1000)
            if random.random() * 100 < args.fail_percent:
                raise RuntimeError("a failure the retry policy absorbs")
            ctx.mark_completed(session=session)

        engine.with_transaction(effect)

    def handler(ctx: TaskContext) -> None:
        run = {"docId": ctx.doc_id, "claimId": ctx.record["claimId"], "pid": os.getpid()}
        if args.versions:
            run["v"] = ctx.get_document().get("v")
        runs.insert_one(run)
        work.wait(args.handler_ms / 1000)
        if random.random() * 100 < args.fail_percent:
            raise RuntimeError("a failure the retry policy absorbs")

    engine = ReactiveTasks(
        uri=args.uri, database=args.database, instance_id=args.instance,
        concurrency=args.concurrency, batch_size=args.batch_size,
        leader_ttl=3000, leader_heartbeat=500, task_lease=3000, poll_min=20, poll_max=200,
        batch_window=10, batch_max_wait=100,
    )  # fmt: skip
    engine.register(
        task="process", collection="items", debounce=0,
        handler=transactional if args.transactional else handler,
        filter={"n": {"$mod": [args.filter_mod, 0]}}, execution_history_limit=50,
        watch_projection={"v": 1} if args.versions else None,
        retry_policy={"type": "fixed", "interval": 100, "max_attempts": -1},
    )  # fmt: skip
    if args.checkpoint_pause_ms:
        slow_down_checkpoints(args.checkpoint_pause_ms / 1000)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    engine.start()
    print("started", flush=True)
    done.wait()
    engine.stop(timeout=10)
    client.close()


def slow_down_checkpoints(seconds: float) -> None:
    """Test seam: pause after each reconciliation checkpoint, so that a test can kill
    the process in the middle of a scan."""
    save = ReconciliationStore.save_checkpoint
    pause = threading.Event()

    def save_then_pause(self: ReconciliationStore, *args: Any, **kwargs: Any) -> bool:
        saved = save(self, *args, **kwargs)
        pause.wait(seconds)
        return saved

    ReconciliationStore.save_checkpoint = save_then_pause  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
