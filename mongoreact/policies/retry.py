"""Retry policies: when a failed task runs again, and when it is given up (``failed``).

``attempt`` below is the number of the run that just failed (1 for the first run).
"""

from __future__ import annotations

import datetime as dt
import random
from math import inf
from typing import Final

import attrs

from .._validate import as_choice, as_int, as_mapping, bool_field, duration_field, field_names
from ..clock import as_utc
from ..durations import parse_duration
from ..errors import ConfigError
from ..schedule import Schedule

UNLIMITED: Final = -1
DEFAULT_MAX_ATTEMPTS: Final = 5
TYPES: Final = ("fixed", "linear", "exponential", "series", "cron")
_COMMON: Final = ("type", "max_attempts", "max_duration", "reset_retries_on_data_change", "jitter")
_REQUIRED: Final = ("interval", "intervals", "expression")
_SPECIFIC: Final = {
    "fixed": ("interval",),
    "linear": ("interval",),
    "exponential": ("min", "max", "factor"),
    "series": ("intervals",),
    "cron": ("expression",),
}


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


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """A ``retry_policy``: delay schedule plus the limits shared by every type.

    Checked however it is built (also ``RetryPolicy(type="series")`` directly):
    ``ConfigError`` names the option and the value."""

    type: str = attrs.field(
        validator=lambda _, __, value: as_choice(value, "retry_policy.type", TYPES)
    )
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=_max_attempts)
    max_duration: dt.timedelta | None = attrs.field(default=None, converter=_optional_duration)
    reset_retries_on_data_change: bool = bool_field(
        "retry_policy.reset_retries_on_data_change", True
    )
    jitter: float = attrs.field(default=0.0, converter=_fraction)
    interval: dt.timedelta = duration_field("retry_policy.interval", dt.timedelta(seconds=10))
    min: dt.timedelta = duration_field("retry_policy.min", dt.timedelta(seconds=10))
    max: dt.timedelta = duration_field("retry_policy.max", dt.timedelta(days=1))
    factor: float = attrs.field(default=2.0, converter=_factor)
    intervals: tuple[dt.timedelta, ...] = attrs.field(default=(), converter=_intervals)
    expression: str = ""

    def __attrs_post_init__(self) -> None:
        if self.type == "series" and not self.intervals:
            raise ConfigError("retry_policy.intervals", [], "expected a non-empty list")
        if self.type == "cron":
            Schedule.from_cron(self.expression, "retry_policy.expression")
        if self.min > self.max:
            raise ConfigError("retry_policy.min", self.min, f"greater than max ({self.max})")

    def delay(self, attempt: int) -> dt.timedelta:
        """Wait before the run after failed run ``attempt`` (not for ``cron``), no jitter."""
        attempt = max(attempt, 1)
        if self.type == "fixed":
            return self.interval
        if self.type == "linear":
            return self.interval * attempt
        if self.type == "series":
            return self.intervals[min(attempt, len(self.intervals)) - 1]
        if self.type == "exponential":
            # Grow in floats and cap before building a timedelta: factor**attempt overflows.
            seconds = self.min.total_seconds()
            cap = self.max.total_seconds()
            for _ in range(attempt - 1):
                seconds *= self.factor
                if seconds >= cap:
                    return self.max
            return dt.timedelta(seconds=min(seconds, cap))
        raise ValueError(f"{self.type} retries are scheduled by next_run_at")

    def next_run_at(
        self, attempt: int, now: dt.datetime, rng: random.Random | None = None
    ) -> dt.datetime:
        """When the task runs again after failed run ``attempt`` at ``now``."""
        if self.type == "cron":
            return Schedule(cron=self.expression).next_after(now)
        delay = self.delay(attempt)
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


DEFAULT_RETRY_POLICY: Final = RetryPolicy(type="exponential")


def parse_retry_policy(value: object, option: str = "retry_policy") -> RetryPolicy:
    """A ``RetryPolicy`` from a dict (or an existing policy); ``ConfigError`` on bad input."""
    if value is None:
        return DEFAULT_RETRY_POLICY
    if isinstance(value, RetryPolicy):
        return value
    raw = as_mapping(value, option, field_names(RetryPolicy))
    kind = as_choice(raw.get("type"), f"{option}.type", TYPES)
    for key in raw:
        if key not in _COMMON and key not in _SPECIFIC[kind]:
            raise ConfigError(f"{option}.{key}", raw[key], f"not an option of {kind} retries")
    for key in _SPECIFIC[kind]:
        if raw.get(key) is None and key in _REQUIRED:
            raise ConfigError(f"{option}.{key}", None, f"required for {kind} retries")
    fields = {key: item for key, item in raw.items() if item is not None}
    if "max_attempts" not in fields:
        # A time limit alone means: retry until it is reached.
        fields["max_attempts"] = UNLIMITED if "max_duration" in fields else DEFAULT_MAX_ATTEMPTS
    return RetryPolicy(**fields)
