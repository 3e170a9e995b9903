"""A randomized run of what operators and deployments do, in real processes.

The chaos run (``test_chaos.py``) stalls every instance at once and changes leaders only
by killing them; the paths it cannot reach are those where one instance falls behind
while the others go on. Here each of three app processes reaches the server through a
proxy of its own, and the handlers are transactional (``--transactional``: the effect
and the completion commit together). A seeded schedule, while a writer inserts and
updates items:

- stalls the leader alone past its lease, so a successor takes over and the old leader
  wakes up late with planning writes in flight;
- pauses a process (SIGSTOP, then SIGCONT) past its task leases, so its transactional
  handlers meet lease expiry;
- deletes the lease document (a forced failover), and restores the globals collection
  from a snapshot taken earlier (a backup restore);
- kills the leader;
- and once, a rolling deploy: every v1 instance (filter ``n % 2 == 0``) replaced one by
  one by a v2 instance (every item), while v1's reconciliation is slowed down.

Invariants: every item (the final definition matches all) is completed at its current
version with a run that read it; every duplicate run is explained; every effect was
committed exactly once; planning resumes after every fault (the run settles).

``MONGOREACT_CHAOS_SECONDS`` and ``MONGOREACT_CHAOS_SEED`` work as for the chaos run.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact.testing import EmbeddedServer

from .harness import AppProcess, Doc, leader, report, wait_for
from .proxy import DroppingProxy
from .test_chaos import SECONDS, Writer, settle

pytestmark = [pytest.mark.fault, pytest.mark.chaos, pytest.mark.once]

COMMON = ("--versions", "--transactional", "--fail-percent", "5", "--batch-size", "50",
          "--handler-ms", "10", "--checkpoint-pause-ms", "20")  # fmt: skip
V1 = ("--filter-mod", "2")  # items with an even n
V2 = ("--filter-mod", "1")  # every item: a wider filter, reconciled on deploy
LEASE = 3.0  # the apps' leader_ttl and task_lease, in seconds


class Cluster:
    """App processes, each behind its own proxy, replaced as they are killed."""

    def __init__(self, port: int, db: Database[Doc]) -> None:
        self.port, self.db = port, db
        self.apps: list[AppProcess] = []
        self.live: dict[str, tuple[AppProcess, DroppingProxy]] = {}
        self.version = V1

    def start(self) -> str:
        proxy = DroppingProxy("127.0.0.1", self.port)
        name = f"ops-{len(self.apps)}-{'v1' if self.version == V1 else 'v2'}"
        uri = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        app = AppProcess(uri, self.db.name, name, *COMMON, *self.version)
        self.apps.append(app)
        self.live[name] = (app, proxy)
        return name

    def pick(self, name: str | None) -> str:
        return name if name in self.live else next(iter(self.live))

    def kill(self, name: str | None) -> None:
        app, proxy = self.live.pop(self.pick(name))
        app.kill()
        proxy.close()
        self.start()

    def stall(self, name: str | None, seconds: float) -> None:
        self.live[self.pick(name)][1].stall(seconds)

    def pause(self, name: str | None, seconds: float) -> None:
        app = self.live[self.pick(name)][0]
        app.process.send_signal(signal.SIGSTOP)
        timer = threading.Timer(seconds, lambda: app.process.send_signal(signal.SIGCONT))
        timer.daemon = True
        timer.start()

    def rolling_deploy(self) -> None:
        """Replace every instance, one at a time, by one of the new version."""
        self.version = V2
        for name in [n for n in self.live if n.endswith("v1")]:
            self.start()
            threading.Event().wait(2.0)  # the new instance is up before the old one goes
            app, proxy = self.live.pop(name)
            app.stop()  # SIGTERM: a graceful stop, as a deploy does
            proxy.close()
            threading.Event().wait(1.0)

    def close(self) -> None:
        for app, proxy in self.live.values():
            app.kill()
            proxy.close()
        for app in self.apps:
            app.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {app.instance}\n{app.output()[-3000:]}" for app in self.apps)


def effects_counted_once(db: Database[Doc]) -> list[Doc]:
    """Effects committed more than once (must be none)."""
    return list(db.effects.find({"count": {"$ne": 1}}))


@pytest.mark.timeout(900)
def test_operator_actions_and_a_rolling_deploy_lose_nothing() -> None:
    seed = int(os.environ.get("MONGOREACT_CHAOS_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    faults: Counter[str] = Counter()
    with EmbeddedServer() as server:
        client: MongoClient[Doc] = MongoClient(server.uri)
        db = client[f"ops_{seed}"]
        cluster = Cluster(int(server.uri.rsplit(":", 1)[1].split("/")[0]), db)
        # The writer draws from its own generator: the fault schedule then depends on
        # the seed alone (not on how many writes happened to interleave).
        writer = Writer(db, random.Random(seed + 1))
        snapshot: list[Doc] = []
        try:
            for _ in range(3):
                cluster.start()
            wait_for(lambda: leader(db) is not None, 60, "a first leader")
            writer.start()
            threading.Event().wait(1.0)
            snapshot = list(db["_mongoreact_globals"].find())  # "last night's backup"

            def delete_lease() -> None:
                db["_mongoreact_globals"].delete_one({"_id": "leader"})

            def restore_globals() -> None:
                globals_ = db["_mongoreact_globals"]
                globals_.delete_many({})
                for document in snapshot:  # the instances write meanwhile: upsert
                    globals_.replace_one({"_id": document["_id"]}, document, upsert=True)

            actions: dict[str, Callable[[], None]] = {
                "stall the leader alone": lambda: cluster.stall(
                    leader(db), rng.uniform(LEASE + 0.5, LEASE + 2.5)
                ),
                "pause a process past its leases": lambda: cluster.pause(
                    rng.choice(list(cluster.live)), rng.uniform(LEASE + 0.5, LEASE + 2.5)
                ),
                "delete the lease document": delete_lease,
                "restore the globals from a backup": restore_globals,
                "kill the leader": lambda: cluster.kill(leader(db)),
            }
            deadline = time.monotonic() + SECONDS
            deployed = False
            while time.monotonic() < deadline:
                if not deployed and time.monotonic() > deadline - SECONDS / 2:
                    cluster.rolling_deploy()
                    faults["rolling deploy with a wider filter"] += 1
                    deployed = True
                    continue
                name = rng.choice(list(actions))
                actions[name]()
                faults[name] += 1
                threading.Event().wait(rng.uniform(0.8, 2.0))
            if not deployed:
                cluster.rolling_deploy()
                faults["rolling deploy with a wider filter"] += 1
            writer.stop()
            recovery, result = settle(db, seed, 300, cluster.logs)
            twice = effects_counted_once(db)
            twice_detail = [
                (db.items_tasks.find_one({"sourceDocId": ObjectId(e["_id"].split(":")[0])}),
                 list(db.runs.find({"docId": ObjectId(e["_id"].split(":")[0])})))
                for e in twice[:2]
            ]  # fmt: skip
            lost_detail = [
                (db.items.find_one({"_id": i}), db.items_tasks.find_one({"sourceDocId": i}),
                 list(db.runs.find({"docId": i})))
                for i in result.lost[:2]
            ]  # fmt: skip
        finally:
            writer.stop()
            cluster.close()
            client.close()
    schedule = ", ".join(f"{name} x{count}" for name, count in sorted(faults.items()))
    report(
        f"[fault] operations seed={seed} {SECONDS:.0f}s ({schedule}): items={result.items} "
        f"runs={result.runs} lost={len(result.lost)} effects twice={len(twice)} duplicates "
        f"by cause: lease expired {result.expired}, retried {result.retried}, unexplained "
        f"{len(result.unexplained)}; settled {recovery:.1f}s after the faults"
    )
    if os.environ.get("MONGOREACT_CHAOS_LOGS"):  # every app's log, for a diagnosis
        print("\n".join(f"--- {app.instance}\n{app.output()}" for app in cluster.apps))
    for app in cluster.apps:
        app.log.close()
    assert not result.lost, f"seed {seed}: lost {result.lost[:10]}: {lost_detail}"
    assert not twice, f"seed {seed}: effects committed twice: {twice[:10]}: {twice_detail}"
    assert not result.unexplained, f"seed {seed}: {result.unexplained[:10]}"
