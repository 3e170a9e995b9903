"""Retry policies: when a failed task runs again, and when it is given up (``failed``).

``attempt`` below is the number of the run that just failed (1 for the first run).
"""

from __future__ import annotations

import datetime as dt
import random
from math import inf
from typing import Any, Final

import attrs

from ..clock import as_utc
from ..errors import ConfigError
from ._validate import (
    as_choice,
    as_int,
    as_mapping,
    bool_field,
    duration_field,
    field_names,
    required_duration_field,
)
from .durations import parse_duration
from .schedule import Schedule

UNLIMITED: Final = -1
DEFAULT_MAX_ATTEMPTS: Final = 5
TYPES: Final = ("fixed", "linear", "exponential", "series", "cron")


def _max_attempts(_: object, __: object, value: object) -> None:
    attempts = as_int(value, "retry_policy.max_attempts", minimum=UNLIMITED)
    if attempts == 0:
        raise ConfigError("retry_policy.max_attempts", attempts, "use -1 for unlimited, or >= 1")


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError("retry_policy.jitter", value, "expected a fraction from 0 to 1")
    return float(value)


def _factor(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < inf:
        raise ConfigError("retry_policy.factor", value, "expected a number >= 1")
    return float(value)


def _optional_duration(value: object) -> dt.timedelta | None:
    return None if value is None else parse_duration(value, "retry_policy.max_duration")


def _intervals(value: object) -> tuple[dt.timedelta, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError("retry_policy.intervals", value, "expected a non-empty list")
    return tuple(
        parse_duration(item, f"retry_policy.intervals[{i}]") for i, item in enumerate(value)
    )


def _type_field(kind: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if value != kind:
            raise ConfigError("retry_policy.type", value, f"a {kind} policy's type is {kind!r}")

    return attrs.field(default=kind, validator=check)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """A ``retry_policy``: the limits every type shares; one subclass per type decides
    the delays. ``RetryPolicy(type="fixed", interval="1m")`` builds the class of that
    type (``FixedRetry``, ``LinearRetry``, ``ExponentialRetry``, ``SeriesRetry``,
    ``CronRetry``).

    Checked however it is built (also ``RetryPolicy(type="series")`` directly):
    ``ConfigError`` names the option and the value."""

    type: str = ""
    max_duration: dt.timedelta | None = attrs.field(default=None, converter=_optional_duration)
    # A time limit alone means: retry until it is reached (the spec's rule), however the
    # policy is built (a dict or this class).
    max_attempts: int = attrs.field(
        default=attrs.Factory(
            lambda self: UNLIMITED if self.max_duration is not None else DEFAULT_MAX_ATTEMPTS,
            takes_self=True,
        ),
        validator=_max_attempts,
    )
    reset_retries_on_data_change: bool = bool_field(
        "retry_policy.reset_retries_on_data_change", True
    )
    jitter: float = attrs.field(default=0.0, converter=_fraction)

    def __new__(cls, **fields: Any) -> RetryPolicy:
        kind = cls
        if cls is RetryPolicy:
            kind = _CLASSES[as_choice(fields.get("type"), "retry_policy.type", TYPES)]
        names = attrs.fields_dict(kind)
        for key, value in fields.items():
            if key not in names:
                kind_name = names["type"].default
                raise ConfigError(
                    f"retry_policy.{key}", value, f"not an option of {kind_name} retries"
                )
        return super().__new__(kind)

    def delay(self, attempt: int) -> dt.timedelta:
        """Wait before the run after failed run ``attempt``, without jitter."""
        raise NotImplementedError  # every type but cron; cron overrides next_run_at

    def next_run_at(
        self, attempt: int, now: dt.datetime, rng: random.Random | None = None
    ) -> dt.datetime:
        """When the task runs again after failed run ``attempt`` at ``now``."""
        delay = self.delay(max(attempt, 1))
        if self.jitter:
            # Spread retries of tasks that failed together (e.g. a shared outage) by up to
            # +jitter of the delay; never shorter than the policy's delay.
            delay += delay * self.jitter * (rng or random).random()
        return now + delay

    def gives_up(self, attempts: int, first_error_at: dt.datetime | None, now: dt.datetime) -> bool:
        """Whether a task that has failed ``attempts`` times goes to ``failed``."""
        if self.max_attempts != UNLIMITED and attempts >= self.max_attempts:
            return True
        if self.max_duration is not None and first_error_at is not None:
            return now - as_utc(first_error_at) >= self.max_duration
        return False


@attrs.frozen(kw_only=True)
class FixedRetry(RetryPolicy):
    """The same ``interval`` after every failure."""

    type: str = _type_field("fixed")
    interval: dt.timedelta = required_duration_field("retry_policy.interval", "fixed retries")

    def delay(self, attempt: int) -> dt.timedelta:
        return self.interval


@attrs.frozen(kw_only=True)
class LinearRetry(RetryPolicy):
    """``interval`` times the number of failed runs."""

    type: str = _type_field("linear")
    interval: dt.timedelta = required_duration_field("retry_policy.interval", "linear retries")

    def delay(self, attempt: int) -> dt.timedelta:
        return self.interval * max(attempt, 1)


@attrs.frozen(kw_only=True)
class ExponentialRetry(RetryPolicy):
    """``min``, then ``factor`` times longer after each failure, at most ``max``."""

    type: str = _type_field("exponential")
    min: dt.timedelta = duration_field("retry_policy.min", dt.timedelta(seconds=10))
    max: dt.timedelta = duration_field("retry_policy.max", dt.timedelta(days=1))
    factor: float = attrs.field(default=2.0, converter=_factor)

    def __attrs_post_init__(self) -> None:
        if self.min > self.max:
            raise ConfigError("retry_policy.min", self.min, f"greater than max ({self.max})")

    def delay(self, attempt: int) -> dt.timedelta:
        # Grow in floats and cap before building a timedelta: factor**attempt overflows.
        seconds, cap = self.min.total_seconds(), self.max.total_seconds()
        for _ in range(max(attempt, 1) - 1):
            seconds *= self.factor
            if seconds >= cap:
                return self.max
        return dt.timedelta(seconds=min(seconds, cap))


@attrs.frozen(kw_only=True)
class SeriesRetry(RetryPolicy):
    """``intervals[n - 1]`` after the n-th failure; the last one from then on."""

    type: str = _type_field("series")
    intervals: tuple[dt.timedelta, ...] = attrs.field(default=(), converter=_intervals)

    def __attrs_post_init__(self) -> None:
        if not self.intervals:
            raise ConfigError("retry_policy.intervals", [], "expected a non-empty list")

    def delay(self, attempt: int) -> dt.timedelta:
        return self.intervals[min(max(attempt, 1), len(self.intervals)) - 1]


@attrs.frozen(kw_only=True)
class CronRetry(RetryPolicy):
    """At the next time the cron ``expression`` names (no jitter)."""

    type: str = _type_field("cron")
    expression: str = ""

    def __attrs_post_init__(self) -> None:
        Schedule.from_cron(self.expression, "retry_policy.expression")

    def next_run_at(
        self, attempt: int, now: dt.datetime, rng: random.Random | None = None
    ) -> dt.datetime:
        return Schedule(cron=self.expression).next_after(now)


_CLASSES: Final[dict[str, type[RetryPolicy]]] = {
    "fixed": FixedRetry,
    "linear": LinearRetry,
    "exponential": ExponentialRetry,
    "series": SeriesRetry,
    "cron": CronRetry,
}


DEFAULT_RETRY_POLICY: Final = RetryPolicy(type="exponential")


def parse_retry_policy(value: object) -> RetryPolicy:
    """A ``RetryPolicy`` from a dict (or an existing policy); ``ConfigError`` on bad input."""
    if value is None:
        return DEFAULT_RETRY_POLICY
    if isinstance(value, RetryPolicy):
        return value
    every = {name for cls in _CLASSES.values() for name in field_names(cls)}
    raw = as_mapping(value, "retry_policy", sorted(every))
    fields = {key: item for key, item in raw.items() if item is not None}
    return RetryPolicy(**fields)  # the policy checks its own fields, as when built directly
