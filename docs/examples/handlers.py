"""Handlers: the context, flow control and failures (runs on the embedded server)."""

import threading

from pymongo import MongoClient

import mongoreact as reactive
from mongoreact.testing import EmbeddedServer

finished = threading.Event()


class RateLimited(Exception):
    """What a webhook client might raise on HTTP 429."""


calls = {"webhook": 0}


def deliver_webhook(ctx: reactive.TaskContext) -> None:
    print(f"{ctx.task} for {ctx.doc_id}, attempt {ctx.attempt}, watched {ctx.watched_values}")
    event = ctx.get_document(projection={"payload": 1})
    calls["webhook"] += 1
    try:
        if calls["webhook"] == 1:
            raise RateLimited("429 Too Many Requests")
        print("delivered", event["payload"])
        finished.set()
    except RateLimited:
        ctx.throttle_all("1s")  # no webhook runs on this instance for a second
        ctx.defer_current("1s")  # and this one runs again then; no attempt is counted


def always_fails(ctx: reactive.TaskContext) -> None:
    raise ConnectionError("the CRM is down")


with EmbeddedServer() as server:
    app = reactive.ReactiveTasks(uri=server.uri, database="app")
    app.register(
        task="deliver-webhook", collection="events", handler=deliver_webhook,
        watch_projection={"payload": 1}, debounce=0,
    )  # fmt: skip
    app.register(
        task="sync-to-crm", collection="events", handler=always_fails, debounce=0,
        retry_policy={"type": "fixed", "interval": "100ms", "max_attempts": 3},
    )  # fmt: skip
    app.start()
    with MongoClient(server.uri) as client:
        client.app.events.insert_one({"_id": "e-1", "payload": {"user": 42}})
        assert finished.wait(15), "the webhook was not delivered"
        tasks = client.app.events_tasks
        for _ in range(100):  # the CRM task fails three times, then lands in "failed"
            failed = tasks.find_one({"task": "sync-to-crm", "status": "failed"})
            if failed:
                break
            threading.Event().wait(0.1)
        assert failed is not None
        print("dead letter:", failed["lastError"], "after", failed["attempts"], "attempts")
        print([entry["status"] for entry in failed["executionHistory"]])
    app.stop(timeout=10)
