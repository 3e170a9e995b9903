"""Local throttles (``ctx.throttle_all``): a pause lasts what was asked, not more."""

from __future__ import annotations

import threading
import time

import pytest

from mongoreact.clock import ServerClock
from mongoreact.cluster.throttles import Throttles


@pytest.mark.parametrize("seconds", [0.0, -5.0])
def test_a_pause_of_no_time_or_in_the_past_pauses_nothing(seconds: float) -> None:
    """Mutation testing: a pause rounded up to a second held a task that a handler
    throttled 'until now' (a datetime already past)."""
    throttles = Throttles(None, ServerClock())
    throttles.pause("t", seconds)
    assert not throttles.is_paused("t")


def test_a_pause_lasts_until_its_end() -> None:
    throttles = Throttles(None, ServerClock())
    throttles.pause("t", 0.2)
    assert throttles.is_paused("t") and not throttles.is_paused("other")
    end, tick = time.monotonic() + 5, threading.Event()
    while throttles.is_paused("t") and time.monotonic() < end:
        tick.wait(0.01)
    assert not throttles.is_paused("t")
