"""Adaptive polling: idle workers back off, a found task or a wake-up resets it."""

from __future__ import annotations

import threading
import time

from .fake_store import FakeStore, make_pool, wait_for


def test_idle_polls_back_off_and_a_wake_up_polls_at_once() -> None:
    store, ran = FakeStore(), threading.Event()
    pool, _ = make_pool(store, lambda ctx: ran.set())
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
    pool, _ = make_pool(store, lambda ctx: ran.set())
    pool.start()
    try:
        wait_for(lambda: len(store.claims) >= 6)  # backed off to the cap
        store.add(1)
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
    pool, _ = make_pool(store, lambda ctx: ran.set())
    pool.start()
    wait_for(lambda: len(store.claims) >= 4)
    # stop() takes every slot back: a slot lost by the failed claims would time it out.
    assert pool.stop(timeout=2)


def test_every_scheduled_wake_up_fires() -> None:
    # Only the earliest wake-up was kept: a later one (a retry, a deferral) was dropped
    # when the earlier fired, and its poll came with the idle back-off, seconds late.
    store = FakeStore()
    pool, _ = make_pool(store, lambda ctx: None, poll_min=2000, poll_max=2000)
    pool.start()
    try:
        wait_for(lambda: len(store.claims) >= 1)  # the first poll; the next is 2 s away
        scheduled = time.monotonic()
        pool.wake(0.3)
        pool.wake(0.6)
        wait_for(lambda: len([c for c in store.claims if c >= scheduled + 0.55]) >= 1)
        later = [c - scheduled for c in store.claims if c >= scheduled + 0.55]
        assert later[0] < 1.5, later  # the 0.6 s wake-up, not the 2 s back-off
    finally:
        assert pool.stop(timeout=5)
