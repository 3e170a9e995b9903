"""``Loop``'s waking: wake() during a step is kept, and every scheduled wake-up fires,
a later one surviving an earlier one (the dispatcher's retries and deferrals)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mongoreact._threads import Loop


def wait_until(condition: Callable[[], object], timeout: float = 5, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        threading.Event().wait(0.01)


class _Recorder(Loop):
    """Records when its steps run and which were due to a scheduled wake-up; waits an
    hour between steps unless woken."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.steps: list[tuple[float, bool]] = []
        self.in_step = threading.Event()
        self.release = threading.Event()
        self.hold_next = False

    def step(self) -> float:
        self.steps.append((time.monotonic(), self.wake_due()))
        if self.hold_next:
            self.hold_next = False
            self.in_step.set()
            self.release.wait(5)
        return 3600.0


def test_every_scheduled_wake_up_fires_and_a_later_one_survives_an_earlier_one() -> None:
    loop = _Recorder()
    loop.start()
    try:
        wait_until(lambda: len(loop.steps) == 1, message="the first step")
        now = time.monotonic()
        loop.wake_at(now + 0.6)
        loop.wake_at(now + 0.3)
        # wake_at also wakes the loop at once (steps that are not due), then at 0.3
        # and 0.6 s, each a step of its own.
        wait_until(lambda: sum(due for _, due in loop.steps) == 2, message="both wake-ups")
        first, second = (at for at, due in loop.steps if due)
        assert first >= now + 0.3 - 0.01 and second >= now + 0.6 - 0.01
    finally:
        loop.stop()
        assert loop.join(5)


def test_a_wake_during_a_step_is_not_lost() -> None:
    loop = _Recorder()
    loop.hold_next = True
    loop.start()
    try:
        assert loop.in_step.wait(5)
        loop.wake()  # while the step runs
        loop.release.set()
        wait_until(lambda: len(loop.steps) == 2, timeout=5, message="the step after the wake")
    finally:
        loop.stop()
        assert loop.join(5)


class _Busy(Loop):
    """A step that never asks wake_due() (a dispatcher whose worker pool is full)."""

    def __init__(self) -> None:
        super().__init__("busy")
        self.steps = 0

    def step(self) -> float:
        self.steps += 1
        return 0.25


def test_a_wake_up_that_came_does_not_make_a_loop_spin() -> None:
    """Review finding: a scheduled time in the past cut every wait to zero until a step
    asked wake_due(): 930 000 steps a second while the worker pool was full."""
    loop = _Busy()
    loop.start()
    try:
        loop.wake_at(time.monotonic() + 0.05)
        threading.Event().wait(1.0)
        assert loop.steps <= 10
        assert loop.wake_due()  # remembered for the step that asks
        assert not loop.wake_due()
    finally:
        loop.stop()
        assert loop.join(5)
