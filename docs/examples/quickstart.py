"""Quick start: sync paid orders to an ERP (runs on the embedded server)."""

import threading

from pymongo import MongoClient

import mongoreact as reactive
from mongoreact.testing import EmbeddedServer

synced = threading.Event()


def sync_order(ctx: reactive.TaskContext) -> None:
    order = ctx.get_document()  # raises TaskConditionFailedError if no longer paid
    print(f"syncing order {order['_id']} ({order['amount']} EUR) to the ERP")
    synced.set()


with EmbeddedServer() as server:  # or your replica set: mongodb://host/?replicaSet=rs0
    reactive.init(uri=server.uri, database="shop")
    reactive.register(
        task="sync-order-to-erp",
        collection="orders",
        handler=sync_order,
        filter={"status": "paid"},  # only paid orders
        watch_projection={"status": 1, "amount": 1},  # run again only if these change
        debounce="200ms",
    )
    reactive.start()  # non-blocking: threads plan and run tasks

    # The application just writes documents; the write *is* the event.
    with MongoClient(server.uri) as client:
        client.shop.orders.insert_one({"_id": "o-1", "status": "paid", "amount": 120})
        assert synced.wait(10), "the task did not run"
        task = client.shop.orders_tasks.find_one({"sourceDocId": "o-1"})
        print("task record:", task["status"], task["lastObservedValues"])

    reactive.stop(timeout=10)
