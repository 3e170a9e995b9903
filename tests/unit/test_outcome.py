"""The outcome of a run, decided by one pure function (``mongoreact.execution.outcome.decide``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mongoreact import RetryPolicy
from mongoreact.config.retry import FixedRetry
from mongoreact.errors import TaskConditionFailedError
from mongoreact.execution.outcome import Outcome, decide

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
POLICIES = st.one_of(
    st.builds(
        RetryPolicy,
        type=st.sampled_from(["fixed", "linear"]),
        interval=st.integers(min_value=0, max_value=10**6),
        max_attempts=st.sampled_from([-1, 1, 2, 5]),
        jitter=st.floats(min_value=0, max_value=1),
    ),
    st.builds(
        RetryPolicy,
        type=st.just("exponential"),
        max_attempts=st.sampled_from([-1, 1, 3]),
        max_duration=st.none() | st.integers(min_value=1, max_value=10**7),
    ),
    st.builds(
        RetryPolicy,
        type=st.just("series"),
        intervals=st.lists(st.integers(min_value=0, max_value=10**5), min_size=1),
    ),
    st.builds(RetryPolicy, type=st.just("cron"), expression=st.just("*/5 * * * *")),
)
ERRORS = st.sampled_from([None, ValueError("boom"), TaskConditionFailedError("t", 1)])
TIMES = st.none() | st.integers(min_value=0, max_value=10**8).map(
    lambda ms: NOW - dt.timedelta(milliseconds=ms)
)


@given(
    error=ERRORS,
    deferred=st.none() | st.just(NOW + dt.timedelta(minutes=5)),
    policy=POLICIES,
    attempt=st.integers(min_value=1, max_value=10),
    first_error_at=TIMES,
)
def test_every_run_has_exactly_the_outcome_its_inputs_call_for(
    error: BaseException | None,
    deferred: dt.datetime | None,
    policy: RetryPolicy,
    attempt: int,
    first_error_at: dt.datetime | None,
) -> None:
    decision = decide(
        error=error,
        deferred_until=deferred,
        policy=policy,
        attempt=attempt,
        first_error_at=first_error_at,
        now=NOW,
    )
    outcome, due = decision.outcome, decision.next_run_at
    if isinstance(error, TaskConditionFailedError):
        assert (outcome, due) == (Outcome.SKIPPED, None)
    elif error is None:
        expected: Any = (Outcome.DEFERRED, deferred) if deferred else (Outcome.COMPLETED, None)
        assert (outcome, due) == expected
    elif policy.gives_up(attempt, first_error_at or NOW, NOW):
        assert (outcome, due) == (Outcome.FAILED, None)
    else:
        assert outcome is Outcome.RETRY
        assert due is not None and due >= NOW
        if policy.type != "cron":
            delay = policy.delay(attempt)
            assert NOW + delay <= due <= NOW + delay * (1 + policy.jitter) + dt.timedelta(1e-3)


def test_a_first_failure_with_max_attempts_1_gives_up_at_once() -> None:
    policy = FixedRetry(interval=dt.timedelta(seconds=10), max_attempts=1)
    decision = decide(
        error=ValueError("x"), deferred_until=None, policy=policy, attempt=1,
        first_error_at=None, now=NOW,
    )  # fmt: skip
    assert decision.outcome is Outcome.FAILED


def test_outcomes_read_as_the_strings_records_and_metrics_use() -> None:
    assert str(Outcome.LEASE_LOST) == "lease_lost"
    assert Outcome("completed") is Outcome.COMPLETED
