"""mongoreact's own commands go to the primary with majority concerns, whatever the
client the application hands it (real replica-set semantics the embedded server cannot
show: rollbacks after failover, lagging secondaries)."""

from __future__ import annotations

import threading
from typing import Any

from pymongo import MongoClient, monitoring
from pymongo.database import Database

from mongoreact import ReactiveTasks
from mongoreact.store.connection import MAJORITY_WAIT_MS

from .helpers import FAST, Doc, start, wait_until

WRITES = {"insert", "update", "delete", "findAndModify"}
READS = {"find", "count", "distinct"}
UNCONCERNED = {"hello", "isMaster", "ismaster", "endSessions", "getMore", "killCursors", "ping"}


class Commands(monitoring.CommandListener):
    """Every command started on the client, as sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_lax_client_still_gets_primary_and_majority_on_every_command(
    mongo_uri: str, db: Database[Doc]
) -> None:
    commands = Commands()
    lax: MongoClient[Doc] = MongoClient(
        mongo_uri,
        tz_aware=True,
        readPreference="secondaryPreferred",
        w=1,
        readConcernLevel="local",
        event_listeners=[commands],
    )
    ran = threading.Event()

    def handler(ctx: Any) -> None:
        assert ctx.get_document() is not None  # the late-binding read
        ran.set()

    try:
        engine = ReactiveTasks(client=lax, database=db.name, **FAST)
        engine.register(task="sync", collection="orders", handler=handler, debounce=0)
        start(engine, db)
        db.orders.insert_one({"_id": 1, "status": "paid"})
        assert ran.wait(10)
        wait_until(lambda: engine.count_tasks(status="completed") == 1)
        engine.retry_tasks(task="sync")
        engine.get_tasks(task="sync")
        assert engine.stop(timeout=10)
    finally:
        lax.close()
    checked = {"reads": 0, "writes": 0, "aggregates": 0, "causal": 0}
    for command in commands.sent:
        name = next(iter(command))
        if name in UNCONCERNED or command.get("autocommit") is False:
            continue  # no concerns apply (or the transaction's own do)
        mode = command.get("$readPreference", {}).get("mode", "primary")
        assert mode == "primary", command
        pipeline = command.get("pipeline", [])
        writes = name in WRITES or any("$merge" in stage or "$out" in stage for stage in pipeline)
        if writes:
            assert command.get("writeConcern", {}).get("w") == "majority", command
            # Bounded: a replica set without a majority fails the write (and says so).
            assert command["writeConcern"].get("wtimeout") == MAJORITY_WAIT_MS, command
            checked["writes"] += 1
        if name in READS or name == "aggregate" or (name == "findAndModify"):
            if name == "findAndModify":
                continue  # a write: its read is of the primary's current document
            assert command.get("readConcern", {}).get("level") == "majority", command
            checked["aggregates" if name == "aggregate" else "reads"] += 1
        scan = "sort" in command  # a reconciliation page: no event to read after
        if command.get(name) == "orders" and ((name == "find" and not scan) or writes):
            # The late-binding read and planning's merge read the source at or after
            # the claim's or the event's cluster time (read-your-writes after a failover).
            assert "afterClusterTime" in command.get("readConcern", {}), command
            checked["causal"] += 1
    # The check saw the operations that matter: planning ($merge), the change stream,
    # claims, finalizes, leases, and the late-binding and fence reads.
    assert checked["writes"] >= 5 and checked["reads"] >= 2 and checked["aggregates"] >= 2
    assert checked["causal"] >= 2
