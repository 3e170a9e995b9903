"""Prefetch: short runs are claimed ahead of free threads, long ones are not, and what
was claimed ahead and not started is given back on stop or dropped when lost."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import mongoreact.execution.claim_policy as claim_policy
import mongoreact.execution.worker as worker

from .fake_store import FakeStore, make_pool, wait_for


class Handler:
    """Records the documents it ran for; blocks on ``release`` for ``blocking`` ids."""

    def __init__(self, *blocking: Any) -> None:
        self.ran: list[Any] = []
        self.blocking = set(blocking)
        self.release = threading.Event()
        self.blocked = threading.Event()

    def __call__(self, ctx: Any) -> None:
        self.ran.append(ctx.doc_id)
        if ctx.doc_id in self.blocking:
            self.blocked.set()
            self.release.wait(10)


def drain(store: FakeStore, pool: worker.WorkerPool, count: int) -> None:
    """Queue ``count`` records, run the pool until all are finalized, stop it."""
    store.add(*range(count))
    pool.start()
    try:
        wait_for(lambda: len(store.finalized) == count)
    finally:
        assert pool.stop(timeout=5)


def test_short_runs_are_claimed_ahead_so_a_claim_serves_many_runs() -> None:
    store, handler = FakeStore(), Handler()
    pool, _ = make_pool(store, handler, concurrency=1, prefetch=16)
    drain(store, pool, 200)
    assert sorted(handler.ran) == list(range(200))
    # The first claim knows no run time and takes one record per thread; after that
    # up to 1 + 16 at a time, refilled when half is done.
    assert store.limits[0] == 1 and max(store.limits) == 17
    assert len([taken for taken in store.taken if taken]) <= 200 / 5


def test_nothing_is_claimed_ahead_for_runs_longer_than_the_horizon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(claim_policy, "PREFETCH_HORIZON", 0.001)
    store = FakeStore()
    pool, _ = make_pool(store, lambda ctx: threading.Event().wait(0.02), concurrency=2)
    drain(store, pool, 12)
    assert max(store.limits) <= 2  # never more than the free threads


def test_prefetch_zero_claims_only_for_free_threads() -> None:
    store = FakeStore()
    pool, _ = make_pool(store, lambda ctx: None, concurrency=3, prefetch=0)
    drain(store, pool, 60)
    assert max(store.limits) <= 3


def _blocked_with_records_waiting(
    store: FakeStore, handler: Handler
) -> tuple[worker.WorkerPool, Any]:
    """A one-thread pool that learned its runs are short, now blocked in a run of
    ``"block"`` with ten records claimed ahead and waiting."""
    pool, leases = make_pool(store, handler, concurrency=1, prefetch=16)
    store.add(*range(5))
    pool.start()
    wait_for(lambda: len(store.finalized) == 5)
    store.add("block", *(f"w{n}" for n in range(10)))
    wait_for(handler.blocked.is_set)
    assert store.queue == []  # all claimed: one running, ten waiting
    return pool, leases


def test_records_claimed_ahead_are_given_back_on_stop() -> None:
    store, handler = FakeStore(), Handler("block")
    pool, _ = _blocked_with_records_waiting(store, handler)
    result: list[bool] = []
    stopping = threading.Thread(target=lambda: result.append(pool.stop(timeout=10)))
    stopping.start()
    wait_for(lambda: len(store.given_back) == 10)  # at once, not after the running one
    assert "block" not in store.finalized
    handler.release.set()
    stopping.join(10)
    assert result == [True]
    assert sorted(store.given_back) == sorted(f"w{n}" for n in range(10))
    assert not any(str(doc_id).startswith("w") for doc_id in handler.ran)
    assert "block" in store.finalized


def test_a_record_whose_lease_was_lost_while_waiting_does_not_run() -> None:
    store, handler = FakeStore(), Handler("block")
    pool, leases = _blocked_with_records_waiting(store, handler)
    store.lost = {"w0", "w1", "w2"}  # another instance took these over
    leases.step()
    handler.release.set()
    try:
        wait_for(lambda: len(store.finalized) == 5 + 1 + 7)
    finally:
        assert pool.stop(timeout=5)
    assert not {"w0", "w1", "w2"} & set(handler.ran)
    assert not {"w0", "w1", "w2"} & set(store.finalized + store.given_back)
