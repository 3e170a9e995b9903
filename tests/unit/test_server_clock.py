"""The embedded server's cluster clock and resume tokens (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mongoreact.testing.server.clock import (
    EVENT,
    HIGH_WATER,
    INVALIDATE,
    ClusterClock,
    ClusterTime,
    InvalidToken,
    decode_token,
)


class FakeWall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ticks_are_strictly_increasing_within_and_across_seconds() -> None:
    wall = FakeWall()
    clock = ClusterClock(wall)
    first, second = clock.tick(), clock.tick()
    wall.now = 1001.2
    third = clock.tick()
    assert first < second < third
    assert third == ClusterTime(1001, 1)


def test_a_tick_after_reading_the_clock_is_strictly_later() -> None:
    wall = FakeWall()
    clock = ClusterClock(wall)
    clock.tick()
    wall.now = 1005
    read = clock.now()
    assert read == ClusterTime(1005, 0)
    assert clock.tick() > read


def test_the_clock_never_goes_backwards_when_the_wall_clock_does() -> None:
    wall = FakeWall()
    clock = ClusterClock(wall)
    before = clock.tick()
    wall.now = 900
    assert clock.tick() > before
    assert clock.now() >= before


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([HIGH_WATER, EVENT, INVALIDATE]),
)
def test_tokens_round_trip(seconds: int, increment: int, kind: str) -> None:
    time = ClusterTime(seconds, increment)
    decoded = decode_token(time.token(kind))
    assert decoded.time == time and decoded.kind == kind


@given(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_tokens_sort_like_their_cluster_times(
    left: tuple[int, int], right: tuple[int, int]
) -> None:
    a, b = ClusterTime(*left), ClusterTime(*right)
    assert (a < b) == (a.token(EVENT) < b.token(EVENT))


@pytest.mark.parametrize(
    "data",
    [None, 5, "", "zz", "8200000001000000010", "820000000100000001ZZ", "000000000100000001"],
)
def test_malformed_tokens_are_rejected(data: object) -> None:
    with pytest.raises(InvalidToken):
        decode_token(data)


def test_just_before_is_the_greatest_smaller_time() -> None:
    assert ClusterTime(5, 3).just_before() == ClusterTime(5, 2)
    assert ClusterTime(5, 0).just_before() == ClusterTime(4, 0xFFFFFFFF)
