"""The library's estimate of the server's clock."""

from __future__ import annotations

import datetime as dt

from mongoreact.cluster.clock import ServerClock

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def test_the_offset_comes_from_the_fastest_recent_round_trip() -> None:
    clock = ServerClock(local_now=lambda: T0, window=3)
    # The server runs 5 s ahead. A fast sample pins it within 5 ms.
    clock.add_sample(T0 + dt.timedelta(seconds=5.005), T0, 0.01)
    assert abs(clock.offset - dt.timedelta(seconds=5)) < dt.timedelta(milliseconds=10)
    # A reply that waited 3 s in a busy server's queue would skew it by 1.5 s: ignored.
    clock.add_sample(T0 + dt.timedelta(seconds=8), T0, 3.0)
    assert abs(clock.offset - dt.timedelta(seconds=5)) < dt.timedelta(milliseconds=10)
    assert clock.now() == T0 + clock.offset


def test_old_samples_age_out_of_the_window() -> None:
    clock = ServerClock(local_now=lambda: T0, window=2)
    clock.add_sample(T0, T0, 0.0)  # in step
    clock.add_sample(T0 + dt.timedelta(seconds=2.05), T0, 0.1)
    clock.add_sample(T0 + dt.timedelta(seconds=2.05), T0, 0.1)  # the clocks moved apart
    assert abs(clock.offset - dt.timedelta(seconds=2)) < dt.timedelta(milliseconds=10)


def test_a_reply_without_local_time_changes_nothing() -> None:
    clock = ServerClock(local_now=lambda: T0)
    clock.sync(lambda: {"ok": 1})
    assert clock.offset == dt.timedelta(0)
