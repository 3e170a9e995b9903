"""Adaptive polling: idle workers back off, a found task or a wake-up resets it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from mongoreact import ReactiveTasks
from mongoreact.clock import ServerClock
from mongoreact.leases import LeaseKeeper
from mongoreact.records import BatchClaim, ClaimedTask
from mongoreact.throttles import Throttles
from mongoreact.worker import WorkerPool


class FakeStore:
    """Answers claims from a list of queued records; remembers when it was asked."""

    def __init__(self) -> None:
        self.claims: list[float] = []
        self.queue: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.finalized: list[Any] = []
        self.failures = 0  # claims to fail before answering

    def claim_many(
        self, tasks_collection: str, tasks: list[str], *, limit: int, **_: Any
    ) -> BatchClaim:
        with self.lock:
            self.claims.append(time.monotonic())
            if self.failures:
                self.failures -= 1
                raise RuntimeError("claim failed")
            records, self.queue = self.queue[:limit], self.queue[limit:]
        return BatchClaim(
            [
                ClaimedTask(
                    record=record, claim_id=record["_id"], tasks_collection=tasks_collection
                )
                for record in records
            ]
        )

    def finalize(self, claim: ClaimedTask, update: Any) -> dict[str, Any]:
        self.finalized.append(claim.id)
        return {"status": "completed", "nextRunAt": None}

    def renew(self, claims: list[ClaimedTask], lease: dt.timedelta) -> set[Any]:
        return set()


def make_pool(store: FakeStore, ran: threading.Event) -> WorkerPool:
    engine = ReactiveTasks(uri="mongodb://127.0.0.1:1/app", poll_min=10, poll_max=160)
    engine.register(task="t", collection="jobs", handler=lambda ctx: ran.set())
    registry = engine._registry
    leases = LeaseKeeper(settings=engine.settings, store=store)  # type: ignore[arg-type]
    return WorkerPool(
        settings=engine.settings, registry=registry, store=store,  # type: ignore[arg-type]
        clock=ServerClock(), leases=leases, throttles=Throttles(None, ServerClock()),
    )  # fmt: skip


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.01)


def test_idle_polls_back_off_and_a_wake_up_polls_at_once() -> None:
    store, ran = FakeStore(), threading.Event()
    pool = make_pool(store, ran)
    pool.start()
    try:
        wait_for(lambda: len(store.claims) >= 6)
        gaps = [b - a for a, b in zip(store.claims, store.claims[1:], strict=False)]
        # 10, 20, 40, 80, 160 ms (+ up to 100 ms jitter): the gaps grow to the cap
        assert gaps[-1] >= 0.15 and gaps[0] < 0.12
        seen = len(store.claims)
        threading.Event().wait(0.05)
        woken = time.monotonic()
        pool.wake()
        wait_for(lambda: len(store.claims) > seen and store.claims[-1] >= woken)
        assert store.claims[-1] - woken < 0.1
    finally:
        assert pool.stop(timeout=5)


def test_a_found_task_resets_the_back_off() -> None:
    store, ran = FakeStore(), threading.Event()
    pool = make_pool(store, ran)
    pool.start()
    try:
        wait_for(lambda: len(store.claims) >= 6)  # backed off to the cap
        store.queue.append(
            {"_id": 1, "task": "t", "sourceDocId": 1, "attempts": 1, "lastObservedValues": {}}
        )
        wait_for(ran.is_set)
        found = store.claims[-1]
        wait_for(lambda: len([c for c in store.claims if c > found]) >= 2)
        after = [c for c in store.claims if c > found]
        assert after[1] - after[0] < 0.12  # polling fast again, not at the 160 ms cap
    finally:
        assert pool.stop(timeout=5)


def test_a_failed_claim_gives_back_every_worker_slot_it_took() -> None:
    store, ran = FakeStore(), threading.Event()
    store.failures = 2
    pool = make_pool(store, ran)
    pool.start()
    wait_for(lambda: len(store.claims) >= 4)
    # stop() takes every slot back: a slot lost by the failed claims would time it out.
    assert pool.stop(timeout=2)
