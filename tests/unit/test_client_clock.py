"""The library's estimate of the server's clock."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from mongoreact.clock import ServerClock

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


class Host:
    """A host's clocks: a wall clock that can be stepped, a monotonic one that cannot."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += dt.timedelta(seconds=seconds)
        self.mono += seconds

    def clock(self, window: int = 8) -> ServerClock:
        return ServerClock(local_now=lambda: self.wall, monotonic=lambda: self.mono, window=window)


def test_before_any_sample_the_estimate_is_the_wall_clock() -> None:
    host = Host()
    assert host.clock().now() == T0


def test_the_estimate_comes_from_the_fastest_recent_round_trip() -> None:
    host = Host()
    clock = host.clock(window=3)
    # The server runs 5 s ahead. A fast sample pins it within 5 ms.
    clock.add_sample(T0 + dt.timedelta(seconds=5.005), host.mono, 0.01)
    assert abs(clock.offset - dt.timedelta(seconds=5)) < dt.timedelta(milliseconds=10)
    # A reply that waited 3 s in a busy server's queue would skew it by 1.5 s: ignored.
    clock.add_sample(T0 + dt.timedelta(seconds=8), host.mono, 3.0)
    assert abs(clock.offset - dt.timedelta(seconds=5)) < dt.timedelta(milliseconds=10)


@given(st.floats(-3600, 3600).filter(lambda s: abs(s) > 0.001), st.integers(0, 20))
def test_a_step_of_the_host_wall_clock_changes_nothing(step: float, later_samples: int) -> None:
    """Regression: the estimate was the wall clock plus an offset from the fastest of the
    last 8 samples, so a +90 s step put it 90 s ahead for 8 heartbeats and this host
    claimed leases still running."""
    host = Host()
    clock = host.clock()
    server = T0 + dt.timedelta(seconds=2)  # the server's clock, 2 s ahead of the host
    clock.add_sample(server, host.mono, 0.002)
    host.advance(1.0)
    host.wall += dt.timedelta(seconds=step)  # the host's wall clock steps
    for _ in range(later_samples):
        host.advance(0.5)
        clock.add_sample(server + dt.timedelta(seconds=host.mono - 100.0), host.mono, 0.002)
    true_now = server + dt.timedelta(seconds=host.mono - 100.0)
    assert abs((clock.now() - true_now).total_seconds()) < 0.01


def test_a_step_of_the_server_clock_is_followed_at_the_next_sample() -> None:
    """A failover to a primary whose clock differs, or the server's clock stepped: the
    older samples contradict the new one and are dropped, however fast they were."""
    host = Host()
    clock = host.clock()
    clock.add_sample(T0, host.mono, 0.001)
    host.advance(1.0)
    stepped = T0 + dt.timedelta(seconds=1 - 30)  # the server now runs 30 s behind
    clock.add_sample(stepped, host.mono - 0.01, 0.02)
    assert abs((clock.now() - (stepped + dt.timedelta(seconds=0.01))).total_seconds()) < 0.02
