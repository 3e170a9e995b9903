"""At-least-once under faults: kills, cut connections, lost history, interrupted scans.

Every scenario runs real OS processes (``tests.fault.app``) against one server and ends
with the same accounting: every item's task completed, none lost, and every duplicate
run explained by a lease that expired (or a failure that was retried). Each prints one
summary line.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact.testing import EmbeddedServer

from .harness import AppProcess, Doc, Load, account, leader, report, wait_done, wait_for
from .proxy import DroppingProxy

pytestmark = pytest.mark.fault


def start_app(
    apps: list[AppProcess], uri: str, db: Database[Doc], name: str, *extra: str
) -> AppProcess:
    app = AppProcess(uri, db.name, name, *extra)
    apps.append(app)
    return app


# The two longest scenarios (about 25 s each) run on one interpreter (tox.ini): they
# exercise processes and the server, not what differs between Python versions.
@pytest.mark.once
def test_leader_and_workers_killed_during_load(
    mongo_uri: str, fault_db: Database[Doc], apps: list[AppProcess]
) -> None:
    live = {f"app-{i}": start_app(apps, mongo_uri, fault_db, f"app-{i}") for i in range(3)}
    wait_for(lambda: leader(fault_db) in live, 30, "a first leader")
    load = Load(fault_db, total=400, batch=10, every=0.1).start()
    recoveries, generation = [], 3
    for _ in range(3):
        # SIGKILL the leader, then a worker (likely mid-handler), and replace both.
        wait_for(lambda: leader(fault_db) in live, 30, "a live leader")
        threading_pause(0.5)  # work flowing again
        # A worker that is not the leader, caught mid-handler: the one that started a
        # run most recently.
        by_pid = {app.pid: name for name, app in live.items() if name != leader(fault_db)}
        latest = fault_db.runs.find_one({"pid": {"$in": list(by_pid)}}, sort=[("_id", -1)])
        live.pop(by_pid[latest["pid"]] if latest else next(iter(by_pid.values()))).kill()
        victim = str(leader(fault_db))
        live.pop(victim).kill()
        recoveries.append(wait_for(lambda: leader(fault_db) in live, 30, "a new leader"))
        for _ in range(2):
            name = f"app-{generation}"
            live[name] = start_app(apps, mongo_uri, fault_db, name)
            generation += 1
        threading_pause(0.3)
    load.join()
    wait_done(fault_db, 400, 90, apps, "every item to complete")
    outcome = account(fault_db)
    report(outcome.line("leader+worker SIGKILL x3", f"max {max(recoveries):.2f}s"))
    assert outcome.items == 400 and outcome.lost == 0 and outcome.unexplained == 0


def test_connections_cut_repeatedly_during_load(
    mongo_uri: str, fault_db: Database[Doc], apps: list[AppProcess]
) -> None:
    target = urlsplit(mongo_uri.replace("mongodb://", "http://", 1))
    if "," in (target.netloc or ""):
        pytest.skip("the proxy fronts a single server")
    proxy = DroppingProxy(target.hostname or "127.0.0.1", target.port or 27017)
    via_proxy = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
    try:
        for i in range(2):
            start_app(apps, via_proxy, fault_db, f"net-{i}")
        wait_for(lambda: leader(fault_db) is not None, 30, "a leader")
        load = Load(fault_db, total=300, batch=10, every=0.05).start()
        pause = 0.0
        while load.written < load.total:
            threading_pause(0.7)
            proxy.drop_all()
            pause += 0.7
        load.join()
        recovery = wait_done(fault_db, 300, 90, apps, "every item to complete")
    finally:
        proxy.close()
    outcome = account(fault_db)
    report(outcome.line(f"connections dropped x{proxy.drops}", f"{recovery:.2f}s after load"))
    assert outcome.items == 300 and outcome.lost == 0 and outcome.unexplained == 0


# Planning batches well under the server's history: one planning pass writes one event per
# document at once, and a history shorter than that is lost before anyone can read it.
SMALL_BATCHES = ("--batch-size", "100")


@pytest.mark.once
def test_history_lost_while_every_instance_was_down(apps: list[AppProcess]) -> None:
    # Always a small embedded server: a real oplog cannot be exhausted from a test.
    with EmbeddedServer(history_size=500) as server:
        client: MongoClient[Doc] = MongoClient(server.uri)
        try:
            db = client.history_loss
            for i in range(2):
                start_app(apps, server.uri, db, f"hl-{i}", *SMALL_BATCHES)
            Load(db, total=60).start().join()
            wait_done(db, 60, 60, apps, "the first items")
            for app in apps:
                app.kill()
            Load(db, total=600).start().join()  # 600 writes: more than the server's history
            restarted = [
                start_app(apps, server.uri, db, f"hl-{i}", *SMALL_BATCHES) for i in range(2, 4)
            ]
            recovery = wait_done(db, 660, 150, apps, "every item to complete")
            outcome = account(db)
            report(outcome.line("history lost (286) while all down", f"{recovery:.2f}s"))
            assert outcome.items == 660 and outcome.lost == 0 and outcome.unexplained == 0
            logs = "".join(app.output() for app in restarted)
            assert "history lost" in logs
        finally:
            client.close()


def test_a_killed_reconciliation_resumes_from_its_checkpoint(
    mongo_uri: str, fault_db: Database[Doc], apps: list[AppProcess]
) -> None:
    total = 2000
    fault_db.items.insert_many([{"n": n} for n in range(total)])
    options = ("--batch-size", "50", "--filter-mod", "20", "--handler-ms", "1",
               "--checkpoint-pause-ms", "100")  # fmt: skip
    first = start_app(apps, mongo_uri, fault_db, "scan-1", *options)
    checkpoints = fault_db["_mongoreact_globals"]
    wait_for(lambda: checkpoints.find_one({"_id": "reconcile:items", "lastId": {"$exists": 1}}),
             60, "a first checkpoint")  # fmt: skip
    first.kill()
    checkpoint = checkpoints.find_one({"_id": "reconcile:items"})
    assert checkpoint is not None, "the scan finished before it could be interrupted"
    remaining = fault_db.items.count_documents({"_id": {"$gt": checkpoint["lastId"]}})
    assert 0 < remaining < total
    second = start_app(apps, mongo_uri, fault_db, "scan-2", *options)
    recovery = wait_done(fault_db, total // 20, 90, apps, "every matching item")
    wait_for(lambda: "reconciled items" in second.output(), 30, "the scan to finish")
    log = second.output()
    assert "from the checkpoint" in log
    scanned = int(re.search(r"reconciled items: (\d+) documents", log).group(1))  # type: ignore[union-attr]
    assert scanned == remaining  # resumed after the checkpoint, not from the start
    outcome = account(fault_db, {"n": {"$mod": [20, 0]}})
    report(outcome.line(f"reconciliation killed, resumed ({scanned}/{total} rescanned)",
                       f"{recovery:.2f}s"))  # fmt: skip
    assert outcome.items == total // 20 and outcome.lost == 0 and outcome.unexplained == 0


def threading_pause(seconds: float) -> None:
    threading.Event().wait(seconds)
