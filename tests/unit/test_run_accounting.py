"""The worker pool's account of records in hand and threads, with slow finalizes and
handlers past their time limits (review findings on the first time-limit change)."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from typing import Any

from mongoreact.records import ClaimedTask, Finalized

from .fake_store import FakeStore, make_pool, wait_for


class SlowFinalizeStore(FakeStore):
    """Finalizes only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()  # a finalize is under way, held by release

    def finalize(
        self, claim: ClaimedTask, definition: Any, end: Any, session: Any = None
    ) -> Finalized:
        self.writing.set()
        self.release.wait(10)
        return super().finalize(claim, definition, end, session)

    def finalize_many(self, requests: list[Any]) -> Any:
        self.writing.set()
        self.release.wait(10)
        return super().finalize_many(requests)


def test_a_record_stays_in_hand_until_its_result_is_written() -> None:
    """Regression: on_done ran as soon as the handler returned, before the finalizer
    wrote the result: claims ignored unwritten results, and stop() ended early."""
    store = SlowFinalizeStore()
    ran = threading.Event()
    pool, _ = make_pool(store, lambda ctx: ran.set(), concurrency=1, prefetch=0)
    store.add("a")
    pool.start()
    try:
        assert ran.wait(5)
        assert store.writing.wait(5)  # the result is on its way, not written
        assert pool._in_hand == 1
        store.release.set()
        wait_for(lambda: pool._in_hand == 0)
    finally:
        store.release.set()
        assert pool.stop(timeout=5)


def threads_of(pool: Any) -> int:
    return sum(t.is_alive() for t in pool._executor._threads)


def test_hung_handlers_are_replaced_then_retired_and_stop_is_bounded() -> None:
    store = FakeStore()
    release = threading.Event()
    pool, _ = make_pool(store, lambda ctx: release.wait(30), concurrency=2, prefetch=0)
    definition = pool._registry["t"]
    object.__setattr__(definition, "timeout", dt.timedelta(milliseconds=50))
    store.add("a", "b")
    pool.start()
    try:
        wait_for(lambda: pool.hung == 2)
        wait_for(lambda: len(store.finalized) == 2)  # both ended as timed out
        wait_for(lambda: threads_of(pool) == 4 and pool.running == 0 and pool._in_hand == 0)
        began = time.monotonic()
        assert pool.stop(timeout=1.0) is False  # hung handlers: not clean
        assert time.monotonic() - began < 2.0  # one deadline, not one per thread
    finally:
        release.set()
    wait_for(lambda: pool.hung == 0)


def test_a_handler_raising_systemexit_after_its_timeout_leaves_the_accounts_right() -> None:
    store = FakeStore()
    release = threading.Event()

    def handler(ctx: Any) -> None:
        release.wait(30)
        sys.exit(3)

    pool, _ = make_pool(store, handler, concurrency=1, prefetch=0)
    definition = pool._registry["t"]
    object.__setattr__(definition, "timeout", dt.timedelta(milliseconds=50))
    store.add("a")
    pool.start()
    try:
        wait_for(lambda: pool.hung == 1 and threads_of(pool) == 2)
        release.set()
        wait_for(lambda: pool.hung == 0 and threads_of(pool) == 1)
        assert pool.running == 0 and pool._in_hand == 0
    finally:
        release.set()
        pool.stop(timeout=5)
