"""``mongoreact demo``: three tasks on an embedded server, narrated as they happen."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from .execution.context import TaskContext
from .reactive_tasks import ReactiveTasks
from .records import PENDING, PROCESSING, PROCESSING_DIRTY
from .testing import EmbeddedServer
from .testing._interpreter import FIRST_RUN_NOTICE, server_ready

Document = dict[str, Any]
DATABASE = "shop"
IDLE_TIMEOUT = 30.0


class Narrator:
    """Prints timestamped lines from any thread."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self.runs: Counter[str] = Counter()

    def say(self, text: str) -> None:
        with self._lock:
            print(f"{time.monotonic() - self._started:6.2f}s  {text}", flush=True)

    def ran(self, ctx: TaskContext, outcome: str) -> None:
        self.runs[ctx.task] += 1
        self.say(f"  handler {ctx.task}({ctx.doc_id}) attempt {ctx.attempt}: {outcome}")


def register_tasks(engine: ReactiveTasks, narrator: Narrator, db: Database[Document]) -> None:
    """The demo's tasks: a filtered sync, a flaky handler, a debounced recalculation."""

    def sync_order(ctx: TaskContext) -> None:
        order = ctx.get_document()
        narrator.ran(ctx, f"sent order {order['_id']} ({order['amount']} EUR) to the ERP")

    def notify_warehouse(ctx: TaskContext) -> None:
        if ctx.attempt <= 2:
            narrator.ran(ctx, "warehouse API timed out (raising; will be retried)")
            raise TimeoutError("warehouse API timed out")
        narrator.ran(ctx, "warehouse notified")

    def recalc_rating(ctx: TaskContext) -> None:
        stars = ctx.watched_values["stars"]
        rating = round(sum(stars) / len(stars), 2)
        db.products.update_one({"_id": ctx.doc_id}, {"$set": {"rating": rating}})
        narrator.ran(ctx, f"rating = {rating} from {len(stars)} reviews")

    engine.register(
        task="sync-order-to-erp", collection="orders", handler=sync_order,
        filter={"status": "paid"}, watch_projection={"status": 1, "amount": 1}, debounce=0,
    )  # fmt: skip
    engine.register(
        task="notify-warehouse", collection="orders", handler=notify_warehouse,
        filter={"status": "paid"}, watch_projection={"status": 1}, debounce=0,
        retry_policy={"type": "fixed", "interval": "500ms", "max_attempts": 5},
    )  # fmt: skip
    engine.register(
        task="recalc-product-rating", collection="products", handler=recalc_rating,
        watch_projection={"stars": 1}, debounce="1s",
    )  # fmt: skip


def watch_states(
    db: Database[Document], narrator: Narrator, stop: threading.Event, ready: threading.Event
) -> None:
    """Print every status change of the task records (a change stream on them)."""
    last: dict[Any, str] = {}
    pipeline = [{"$match": {"ns.coll": {"$in": ["orders_tasks", "products_tasks"]}}}]
    with db.watch(pipeline, full_document="updateLookup", max_await_time_ms=200) as stream:
        ready.set()
        while not stop.is_set():
            change = stream.try_next()
            record = (change or {}).get("fullDocument")
            if not record or last.get(record["_id"]) == record["status"]:
                continue
            before = last.get(record["_id"], "(new)")
            last[record["_id"]] = record["status"]
            narrator.say(
                f"{record['task']}({record['sourceDocId']}): {before} -> {record['status']}"
            )


def write_data(db: Database[Document], narrator: Narrator) -> None:
    """The application's writes: nothing here mentions tasks."""
    narrator.say("app: insert 3 orders (2 paid, 1 pending)")
    db.orders.insert_many(
        [
            {"_id": "o-1001", "status": "paid", "amount": 120},
            {"_id": "o-1002", "status": "pending", "amount": 80},
            {"_id": "o-1003", "status": "paid", "amount": 45},
        ]
    )
    time.sleep(1.0)  # pacing, so the first runs show before the next writes
    narrator.say("app: order o-1002 is paid; o-1001 gets a note (not a watched field)")
    db.orders.update_one({"_id": "o-1002"}, {"$set": {"status": "paid"}})
    db.orders.update_one({"_id": "o-1001"}, {"$set": {"note": "gift wrap"}})
    narrator.say("app: 5 reviews for product p-1 in quick succession (debounce 1s)")
    db.products.insert_one({"_id": "p-1", "stars": []})
    for stars in (5, 4, 5, 3, 5):
        db.products.update_one({"_id": "p-1"}, {"$push": {"stars": stars}})


def busy(db: Database[Document]) -> int:
    """Task records still waiting or running."""
    active = {"status": {"$in": [PENDING, PROCESSING, PROCESSING_DIRTY]}}
    return db.orders_tasks.count_documents(active) + db.products_tasks.count_documents(active)


def summary(db: Database[Document], narrator: Narrator) -> None:
    """Per task: handler runs and record statuses."""
    print("\nsummary")
    print(f"  {'task':<24}{'handler runs':>13}  statuses")
    for collection in ("orders_tasks", "products_tasks"):
        for name in sorted(db[collection].distinct("task")):
            statuses = Counter(r["status"] for r in db[collection].find({"task": name}))
            text = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
            print(f"  {name:<24}{narrator.runs[name]:>13}  {text}")


def run_demo() -> int:
    """Start a server, run the tasks, narrate, summarise. Returns an exit code."""
    # The narration reports handler failures itself; keep the library's warnings quiet.
    library_logger = logging.getLogger("mongoreact")
    level = library_logger.level
    library_logger.setLevel(logging.ERROR)
    try:
        return _narrated_run()
    finally:
        library_logger.setLevel(level)


def _narrated_run() -> int:
    narrator = Narrator()
    narrator.say("starting the embedded MongoDB-compatible server")
    if not server_ready():
        narrator.say(FIRST_RUN_NOTICE)
    with EmbeddedServer() as server:
        narrator.say(f"embedded MongoDB-compatible server at {server.uri}")
        client: MongoClient[Document] = MongoClient(server.uri)
        db = client[DATABASE]
        engine = ReactiveTasks(
            uri=server.uri, database=DATABASE, concurrency=4, poll_min=50, poll_max=500,
            batch_window=20, batch_max_wait=100, leader_heartbeat="1s", leader_ttl="5s",
        )  # fmt: skip
        register_tasks(engine, narrator, db)
        stop, ready = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=watch_states, args=(db, narrator, stop, ready), name="mongoreact-demo-watch"
        )
        watcher.start()
        ready.wait(10)
        engine.start()
        narrator.say("mongoreact started: 3 tasks on orders and products")
        try:
            write_data(db, narrator)
            deadline = time.monotonic() + IDLE_TIMEOUT
            stop.wait(0.5)  # the debounced run is not planned yet right after the writes
            while busy(db) and time.monotonic() < deadline:
                stop.wait(0.1)
            idle = not busy(db)
        finally:
            engine.stop(timeout=10)
            stop.set()
            watcher.join(5)
        summary(db, narrator)
        client.close()
    return 0 if idle else 1
