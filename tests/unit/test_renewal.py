"""``Renewal``: the loop that keeps a lock's or a cron task's lease alive."""

from __future__ import annotations

import threading

from pymongo.errors import AutoReconnect

from mongoreact._threads import Renewal


def test_transient_errors_are_retried_and_a_lost_lease_ends_the_loop_once() -> None:
    answers: list[object] = [AutoReconnect("blip"), True, False]
    calls = 0
    lost = threading.Event()
    lost_count = 0

    def renew() -> bool:
        nonlocal calls
        calls += 1
        answer = answers.pop(0) if answers else True
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    def on_lost() -> None:
        nonlocal lost_count
        lost_count += 1
        lost.set()

    renewal = Renewal("test-renewal", 0.01, renew, on_lost=on_lost)
    renewal.start()
    assert lost.wait(5)
    assert renewal.join(5)
    assert (calls, lost_count) == (3, 1)


def test_stopping_before_the_first_interval_renews_nothing() -> None:
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        return True

    renewal = Renewal("test-renewal", 60.0, renew)
    renewal.start()
    renewal.stop()
    assert renewal.join(5)
    assert calls == []
