"""The dispatcher's claim sizes: properties that hold for every state."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mongoreact.execution.claim_policy import (
    MAX_CLAIM_BATCH,
    PREFETCH_HORIZON,
    ClaimPolicy,
    average_run_time,
)

policies = st.builds(
    ClaimPolicy,
    concurrency=st.integers(min_value=1, max_value=200),
    prefetch=st.integers(min_value=0, max_value=100),
)
run_times = st.none() | st.floats(min_value=0.0, max_value=3600.0)


@given(policies, st.integers(min_value=0, max_value=400), st.data(), run_times)
def test_never_holds_more_than_threads_plus_prefetch(
    policy: ClaimPolicy, in_hand: int, data: st.DataObject, run_time: float | None
) -> None:
    busy = data.draw(st.integers(min_value=0, max_value=in_hand))
    room = policy.room(in_hand=in_hand, busy=busy, run_time=run_time)
    assert 0 <= room <= MAX_CLAIM_BATCH
    if room:
        assert in_hand + room <= policy.concurrency + policy.prefetch


@given(policies, run_times)
def test_an_idle_instance_always_claims(policy: ClaimPolicy, run_time: float | None) -> None:
    assert policy.room(in_hand=0, busy=0, run_time=run_time) >= 1


@given(policies, st.integers(min_value=0, max_value=400), run_times)
def test_an_idle_thread_with_nothing_waiting_gets_work(
    policy: ClaimPolicy, in_hand: int, run_time: float | None
) -> None:
    # Fewer records in hand than threads: some thread is idle, whatever is running.
    if in_hand < policy.concurrency:
        assert policy.room(in_hand=in_hand, busy=in_hand, run_time=run_time) >= 1


@given(
    policies, st.floats(min_value=1e-4, max_value=3600.0), st.floats(min_value=1.0, max_value=10)
)
def test_longer_runs_claim_no_further_ahead(
    policy: ClaimPolicy, run_time: float, longer: float
) -> None:
    assert 0 <= policy.ahead(run_time * longer) <= policy.ahead(run_time) <= policy.prefetch


def test_long_handlers_claim_nothing_ahead_and_unmeasured_runs_neither() -> None:
    policy = ClaimPolicy(concurrency=4, prefetch=16)
    assert policy.ahead(None) == 0
    assert policy.ahead(4 * PREFETCH_HORIZON) == 1
    assert policy.ahead(10 * 4 * PREFETCH_HORIZON) == 0
    assert policy.ahead(0.001) == 16


def test_the_run_time_average_starts_at_the_first_run_and_follows_later_ones() -> None:
    average = average_run_time(None, 2.0)
    assert average == 2.0
    assert 1.0 < average_run_time(average, 1.0) < 2.0
