"""An in-memory stand-in for ``TaskStore``, and a ``WorkerPool`` built on it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo.client_session import ClientSession

from mongoreact import ReactiveTasks, TaskContext, TaskDefinition
from mongoreact.clock import ServerClock
from mongoreact.cluster.throttles import Throttles
from mongoreact.execution.admission import Admission, ConcurrencySlots
from mongoreact.execution.leases import LeaseKeeper
from mongoreact.execution.worker import WorkerPool
from mongoreact.records import (
    COMPLETED,
    WRITTEN_IN_BATCH,
    BatchClaim,
    ClaimedTask,
    Finalized,
    RunEnd,
)


class FakeStore:
    """Answers claims from a list of queued records and remembers what it was asked."""

    def __init__(self) -> None:
        self.claims: list[float] = []  # when each claim came
        self.limits: list[int] = []  # what each claim asked for
        self.taken: list[int] = []  # how many records each claim took
        self.queue: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.finalized: list[Any] = []
        self.batch_reads = 0
        self.given_back: list[Any] = []
        self.lost: set[Any] = set()  # claim ids the next renewal reports lost
        self.failures = 0  # claims to fail before answering

    def add(self, *ids: Any) -> None:
        """Queue records for ``ids`` (of the task ``t``), in one go."""
        records = [
            {"_id": i, "task": "t", "sourceDocId": i, "attempts": 1, "lastObservedValues": {}}
            for i in ids
        ]
        with self.lock:
            self.queue.extend(records)

    def claim_many(
        self,
        tasks_collection: str,
        tasks: list[str],
        *,
        now: dt.datetime,
        instance_id: str,
        lease: dt.timedelta,
        limit: int,
        spread: int = 1,
        triggers: list[str] | None = None,
    ) -> BatchClaim:
        with self.lock:
            self.claims.append(time.monotonic())
            self.limits.append(limit)
            if self.failures:
                self.failures -= 1
                raise RuntimeError("claim failed")
            records, self.queue = self.queue[:limit], self.queue[limit:]
            self.taken.append(len(records))
        return BatchClaim(
            [
                ClaimedTask(
                    record=record, claim_id=record["_id"], tasks_collection=tasks_collection
                )
                for record in records
            ]
        )

    def fetch_sources(
        self, definition: TaskDefinition, records: list[dict[str, Any]], *, after: Any = None
    ) -> dict[Any, dict[str, Any]]:
        with self.lock:
            self.batch_reads += 1
        return {r["sourceDocId"]: {"_id": r["sourceDocId"]} for r in records}

    def finalize(
        self,
        claim: ClaimedTask,
        definition: TaskDefinition,
        end: RunEnd,
        session: ClientSession | None = None,
    ) -> Finalized:
        with self.lock:
            self.finalized.append(claim.id)
        return Finalized(written=True, known=True, status=COMPLETED)

    def finalize_many(
        self, requests: list[tuple[ClaimedTask, TaskDefinition, RunEnd]]
    ) -> list[Finalized]:
        with self.lock:
            self.finalized.extend(claim.id for claim, _, _ in requests)
        return [WRITTEN_IN_BATCH for _ in requests]

    def unclaim_many(self, claims: list[ClaimedTask]) -> None:
        with self.lock:
            self.given_back.extend(claim.id for claim in claims)

    def renew(self, claims: list[ClaimedTask], lease: dt.timedelta) -> set[Any]:
        return {c.claim_id for c in claims} & self.lost

    def fetch_source(
        self,
        definition: TaskDefinition,
        record: dict[str, Any],
        *,
        projection: Any = None,
        session: ClientSession | None = None,
        after: Any = None,
    ) -> dict[str, Any] | None:
        return {"_id": record["sourceDocId"]}


def make_pool(
    store: FakeStore, handler: Callable[[TaskContext], object], **options: Any
) -> tuple[WorkerPool, LeaseKeeper]:
    """A pool running ``handler`` for task ``t``; its lease keeper is not started."""
    engine = ReactiveTasks(
        **{"uri": "mongodb://127.0.0.1:1/app", "poll_min": 10, "poll_max": 160, **options}
    )
    engine.register(task="t", collection="jobs", handler=handler)
    leases = LeaseKeeper(settings=engine.settings, store=store)
    pool = WorkerPool(
        settings=engine.settings, registry=engine._registry, store=store,
        clock=ServerClock(), leases=leases,
        admission=Admission(
            engine.settings, Throttles(None, ServerClock()), ConcurrencySlots(engine.settings, None)
        ),
    )  # fmt: skip
    return pool, leases


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.01)
