"""Retry policies: the delay schedules and when a task is given up."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mongoreact import ConfigError
from mongoreact.config.retry import (
    DEFAULT_RETRY_POLICY,
    UNLIMITED,
    ExponentialRetry,
    parse_retry_policy,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
S = dt.timedelta(seconds=1)


def test_the_default_is_exponential_from_10s_to_1d_five_attempts() -> None:
    policy = parse_retry_policy(None)
    assert policy is DEFAULT_RETRY_POLICY
    assert [policy.delay(a) for a in (1, 2, 3, 4)] == [10 * S, 20 * S, 40 * S, 80 * S]
    assert policy.delay(60) == dt.timedelta(days=1)
    assert policy.max_attempts == 5
    assert policy.reset_retries_on_data_change is True


def test_fixed_linear_and_series() -> None:
    fixed = parse_retry_policy({"type": "fixed", "interval": "1m"})
    assert fixed.delay(1) == fixed.delay(9) == 60 * S
    linear = parse_retry_policy({"type": "linear", "interval": "10s"})
    assert [linear.delay(a) for a in (1, 2, 3)] == [10 * S, 20 * S, 30 * S]
    series = parse_retry_policy({"type": "series", "intervals": ["1m", "5m"]})
    assert [series.delay(a) for a in (1, 2, 3, 4)] == [60 * S, 300 * S, 300 * S, 300 * S]


def test_cron_retries_at_the_next_matching_time() -> None:
    policy = parse_retry_policy({"type": "cron", "expression": "0 * * * *"})
    assert policy.next_run_at(1, NOW + dt.timedelta(minutes=20)) == NOW + dt.timedelta(hours=1)


def test_max_attempts_and_max_duration() -> None:
    policy = parse_retry_policy({"type": "fixed", "interval": 1, "max_attempts": 3})
    assert not policy.gives_up(2, NOW, NOW)
    assert policy.gives_up(3, NOW, NOW)
    timed = parse_retry_policy({"type": "fixed", "interval": 1, "max_duration": "1h"})
    assert timed.max_attempts == UNLIMITED  # unlimited by default when max_duration is set
    assert not timed.gives_up(1000, NOW, NOW + dt.timedelta(minutes=59))
    assert timed.gives_up(1, NOW, NOW + dt.timedelta(hours=1))
    unlimited = parse_retry_policy({"type": "fixed", "interval": 1, "max_attempts": -1})
    assert not unlimited.gives_up(10**6, NOW, NOW + dt.timedelta(days=999))


@given(
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=1, max_value=100),
)
def test_exponential_is_monotonic_capped_and_never_negative(
    attempt: int, low_ms: int, extra_ms: int, factor: float
) -> None:
    policy = parse_retry_policy(
        {"type": "exponential", "min": low_ms, "max": low_ms + extra_ms, "factor": factor}
    )
    assert isinstance(policy, ExponentialRetry)
    delay, following = policy.delay(attempt), policy.delay(attempt + 1)
    assert dt.timedelta(0) <= delay <= policy.max
    assert delay <= following
    assert delay >= min(policy.min, policy.max)


@given(
    st.sampled_from(["fixed", "linear"]),
    st.integers(min_value=0, max_value=10**8),
    st.integers(min_value=1, max_value=1000),
)
def test_interval_policies_never_shrink(kind: str, interval: int, attempt: int) -> None:
    policy = parse_retry_policy({"type": kind, "interval": interval})
    assert dt.timedelta(0) <= policy.delay(attempt) <= policy.delay(attempt + 1)


@given(st.integers(min_value=1, max_value=50), st.floats(min_value=0, max_value=1))
def test_jitter_only_lengthens_and_stays_bounded(attempt: int, jitter: float) -> None:
    policy = parse_retry_policy({"type": "fixed", "interval": "10s", "jitter": jitter})
    when = policy.next_run_at(attempt, NOW, random.Random(attempt))
    assert NOW + 10 * S <= when <= NOW + 10 * S * (1 + jitter)


@pytest.mark.parametrize(
    ("policy", "option"),
    [
        ({"type": "sometimes"}, "retry_policy.type"),
        ({}, "retry_policy.type"),
        ("exponential", "retry_policy"),
        ({"type": "fixed"}, "retry_policy.interval"),
        ({"type": "fixed", "interval": "soon"}, "retry_policy.interval"),
        ({"type": "fixed", "interval": 1, "min": 1}, "retry_policy.min"),
        ({"type": "series", "intervals": []}, "retry_policy.intervals"),
        ({"type": "series", "intervals": ["1s", "x"]}, "retry_policy.intervals[1]"),
        ({"type": "cron", "expression": "every tuesday"}, "retry_policy.expression"),
        ({"type": "exponential", "factor": 0.5}, "retry_policy.factor"),
        ({"type": "exponential", "min": "1h", "max": "1m"}, "retry_policy.min"),
        ({"type": "exponential", "max_attempts": 0}, "retry_policy.max_attempts"),
        ({"type": "exponential", "max_attempts": "5"}, "retry_policy.max_attempts"),
        ({"type": "exponential", "max_duration": "-1s"}, "retry_policy.max_duration"),
        ({"type": "exponential", "jitter": 2}, "retry_policy.jitter"),
        ({"type": "exponential", "reset_retries_on_data_change": "no"},
         "retry_policy.reset_retries_on_data_change"),
        ({"type": "exponential", "maxAttempts": 3}, "retry_policy.maxAttempts"),
    ],
)  # fmt: skip
def test_bad_policies_name_the_option(policy: object, option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_retry_policy(policy)
    assert caught.value.option == option
