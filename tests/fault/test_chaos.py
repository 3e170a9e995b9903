"""A randomized chaos run in real processes: nothing is lost, every duplicate explained.

Three app processes (``tests.fault.app``) reach the server through a TCP proxy while a
writer inserts and updates items continuously. A seeded random schedule injects, one
after another: SIGKILLs of the leader and of workers (replaced at once), dropped
connections, multi-second network stalls (longer than the leader lease), large
``insert_many`` bursts, and history loss - a stall during which more is written than the
server keeps, once more while the reconciliation that follows is still scanning.

Then every item must be handled at its last version: its record ``completed`` with the
item's current ``v`` as its snapshot, and a run that read that ``v``. Duplicate runs of
one version are counted by cause (a lease that expired, or a failure retried); a claim
that ran twice, or a version completed twice, is unexplained and fails the test.

``MONGOREACT_CHAOS_SECONDS`` (default 15) sets how long faults are injected - raise it
for a soak run - and ``MONGOREACT_CHAOS_SEED`` replays a schedule; the seed is in the
summary line.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact.testing import EmbeddedServer

from .harness import AppProcess, Doc, leader, report, wait_for
from .proxy import DroppingProxy

pytestmark = [pytest.mark.fault, pytest.mark.chaos, pytest.mark.once]

SECONDS = float(os.environ.get("MONGOREACT_CHAOS_SECONDS", "15"))
# Sized for the embedded server, whose cost per claim grows with the pending records
# (docs/embedded-server.md): a few thousand items in all.
HISTORY = 400  # events the server keeps
BURST = 200
APP_OPTIONS = ("--versions", "--fail-percent", "5", "--batch-size", "50", "--handler-ms",
               "10", "--checkpoint-pause-ms", "20")  # fmt: skip


class Writer:
    """Inserts new items and bumps the ``v`` of existing ones until stopped."""

    def __init__(self, db: Database[Doc], rng: random.Random) -> None:
        self.db, self.rng = db, rng
        self.inserted = self.updated = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            count = self.rng.randint(1, 4)
            self.db.items.insert_many(
                [{"n": self.inserted + i, "v": 0} for i in range(count)], ordered=True
            )
            self.inserted += count
            targets = [self.rng.randrange(self.inserted) for _ in range(self.rng.randint(0, 4))]
            if targets:
                self.updated += self.db.items.update_many(
                    {"n": {"$in": targets}}, {"$inc": {"v": 1}}
                ).modified_count
            self.stopping.wait(self.rng.uniform(0.1, 0.3))

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(30)


class Cluster:
    """The app processes, replaced as they are killed."""

    def __init__(self, uri: str, db: Database[Doc]) -> None:
        self.uri, self.db = uri, db
        self.apps: list[AppProcess] = []
        self.live: dict[str, AppProcess] = {}
        self.kills = 0

    def start(self) -> None:
        name = f"chaos-{len(self.apps)}"
        app = AppProcess(self.uri, self.db.name, name, *APP_OPTIONS)
        self.apps.append(app)
        self.live[name] = app

    def kill(self, name: str | None) -> None:
        if name not in self.live:
            name = next(iter(self.live))
        self.live.pop(name).kill()
        self.kills += 1
        self.start()

    def logs(self) -> str:
        return "\n".join(f"--- {app.instance}\n{app.output()[-3000:]}" for app in self.apps)


@attrs.frozen
class Accounting:
    """Items at their last version, runs, and the duplicate runs by cause."""

    items: int
    runs: int
    lost: list[Any]
    expired: int  # a run of a version again after its first claim's lease expired
    retried: int  # a run of a version again after a failed run of it
    unexplained: list[str]


def account(db: Database[Doc]) -> Accounting:
    items = {d["_id"]: d.get("v") for d in db.items.find({}, {"v": 1})}
    runs: dict[Any, list[tuple[Any, Any]]] = {}
    for run in db.runs.find({}, {"docId": 1, "claimId": 1, "v": 1}):
        runs.setdefault(run["docId"], []).append((run["claimId"], run.get("v")))
    records = {r["sourceDocId"]: r for r in db.items_tasks.find()}
    lost: list[Any] = []
    unexplained: list[str] = []
    expired = retried = 0
    for item, version in items.items():
        record = records.get(item) or {}
        seen = runs.get(item, [])
        handled = (
            record.get("status") == "completed"
            and record.get("lastObservedValues") == {"v": version}
            and any(v == version for _, v in seen)
        )
        if not handled:
            lost.append(item)
            continue
        history = record.get("executionHistory", [])
        finished = {h["claimId"]: h["status"] for h in history}
        for claim, times in Counter(claim for claim, _ in seen).items():
            if times > 1:
                unexplained.append(f"{item}: claim {claim} ran {times} times")
        by_version: dict[Any, list[Any]] = {}
        for claim, v in seen:
            by_version.setdefault(v, []).append(claim)
        for v, claims in by_version.items():
            completions = [c for c in claims if finished.get(c) == "completed"]
            if len(completions) > 1:
                unexplained.append(f"{item}: version {v} completed by {completions}")
            # Every run of a version other than the one that completed it is a duplicate.
            extra = [c for c in claims if finished.get(c) != "completed"]
            retried += sum(1 for c in extra if finished.get(c) == "failed")
            expired += sum(1 for c in extra if c not in finished)
    return Accounting(
        items=len(items), runs=sum(len(r) for r in runs.values()), lost=lost,
        expired=expired, retried=retried, unexplained=unexplained,
    )  # fmt: skip


def settled(db: Database[Doc]) -> bool:
    """Every item's record completed at the item's current version."""
    items = {d["_id"]: d.get("v") for d in db.items.find({}, {"v": 1})}
    done = {
        r["sourceDocId"]: (r.get("lastObservedValues") or {}).get("v")
        for r in db.items_tasks.find({"status": "completed"}, {"sourceDocId": 1,
                                                               "lastObservedValues": 1})
    }  # fmt: skip
    return all(item in done and done[item] == v for item, v in items.items())


def settle(
    db: Database[Doc], seed: int, timeout: float, logs: Callable[[], str]
) -> tuple[float, Accounting]:
    """Wait until every item is handled at its last version; how long that took after
    the faults, and the accounting. A timeout fails with what is not handled and the
    apps' ``logs()``."""
    began = time.monotonic()
    try:
        wait_for(lambda: settled(db), timeout, "every item handled at its last version")
    except AssertionError as timed_out:
        result = account(db)
        raise AssertionError(
            f"seed {seed}: {timed_out}; {len(result.lost)} not handled, e.g. "
            f"{result.lost[:5]}\n{logs()}"
        ) from None
    return time.monotonic() - began, account(db)


@pytest.mark.timeout(900)
def test_randomized_chaos_loses_nothing() -> None:
    seed = int(os.environ.get("MONGOREACT_CHAOS_SEED", str(random.randrange(10**6))))
    rng = random.Random(seed)
    faults: Counter[str] = Counter()
    with EmbeddedServer(history_size=HISTORY) as server:
        client: MongoClient[Doc] = MongoClient(server.uri)
        proxy = DroppingProxy("127.0.0.1", int(server.uri.rsplit(":", 1)[1].split("/")[0]))
        db = client[f"chaos_{seed}"]
        cluster = Cluster(f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true", db)
        writer = Writer(db, rng)
        try:
            for _ in range(3):
                cluster.start()
            wait_for(lambda: leader(db) is not None, 60, "a first leader")
            writer.start()

            def lose_history() -> None:
                # The apps cannot read while more is written than the server keeps.
                proxy.stall(4.0)
                db.items.insert_many(
                    [{"n": -1 - i, "v": 0} for i in range(HISTORY + 100)], ordered=False
                )

            def burst() -> None:
                # One command: more documents than a planning batch, many batches' worth.
                db.items.insert_many(
                    [{"n": 10**6 + rng.randrange(10**6), "v": 0} for _ in range(BURST)]
                )

            actions: dict[str, Callable[[], None]] = {
                "kill leader": lambda: cluster.kill(leader(db)),
                "kill worker": lambda: cluster.kill(
                    rng.choice([n for n in cluster.live if n != leader(db)] or [None])
                ),
                "drop connections": proxy.drop_all,
                "stall": lambda: proxy.stall(rng.uniform(1.0, 4.5)),
                "burst": burst,
            }
            deadline = time.monotonic() + SECONDS
            lost_during_scan = False
            while time.monotonic() < deadline:
                if not lost_during_scan and time.monotonic() > deadline - SECONDS / 2:
                    # History lost, and lost again while the reconciliation it started
                    # is still scanning.
                    lose_history()
                    threading.Event().wait(4.5)  # the stall ends; the scan starts
                    lose_history()
                    faults["history lost during a reconciliation"] += 1
                    lost_during_scan = True
                    continue
                name = rng.choice(list(actions))
                actions[name]()
                faults[name] += 1
                threading.Event().wait(rng.uniform(0.8, 2.0))
            writer.stop()
            recovery, result = settle(db, seed, 240, cluster.logs)
        finally:
            writer.stop()
            for app in cluster.apps:
                app.kill()
            proxy.close()
            client.close()
    schedule = ", ".join(f"{name} x{count}" for name, count in sorted(faults.items()))
    report(
        f"[fault] chaos seed={seed} {SECONDS:.0f}s ({schedule}): items={result.items} "
        f"runs={result.runs} lost={len(result.lost)} duplicates by cause: lease expired "
        f"{result.expired}, retried {result.retried}, unexplained "
        f"{len(result.unexplained)}; settled {recovery:.1f}s after the faults"
    )
    logs = "".join(app.output() for app in cluster.apps)
    for app in cluster.apps:
        app.log.close()
    assert not result.lost, f"seed {seed}: lost {result.lost[:10]}"
    assert not result.unexplained, f"seed {seed}: {result.unexplained[:10]}"
    assert "history lost" in logs  # the schedule did reach the history-loss path
