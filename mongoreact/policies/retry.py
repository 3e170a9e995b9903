"""Retry policies: when a failed task runs again, and when it is given up (``failed``).

``attempt`` below is the number of the run that just failed (1 for the first run).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from typing import Any, Final

import attrs
from croniter import croniter

from .._validate import as_bool, as_choice, as_int, as_mapping
from ..clock import as_utc
from ..durations import parse_duration
from ..errors import ConfigError

UNLIMITED: Final = -1
DEFAULT_MAX_ATTEMPTS: Final = 5
TYPES: Final = ("fixed", "linear", "exponential", "series", "cron")
_COMMON: Final = ("type", "max_attempts", "max_duration", "reset_retries_on_data_change", "jitter")
_SPECIFIC: Final = {
    "fixed": ("interval",),
    "linear": ("interval",),
    "exponential": ("min", "max", "factor"),
    "series": ("intervals",),
    "cron": ("expression",),
}


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """A parsed ``retry_policy``: delay schedule plus the limits shared by every type."""

    type: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_duration: dt.timedelta | None = None
    reset_retries_on_data_change: bool = True
    jitter: float = 0.0
    interval: dt.timedelta = dt.timedelta(seconds=10)
    min: dt.timedelta = dt.timedelta(seconds=10)
    max: dt.timedelta = dt.timedelta(days=1)
    factor: float = 2.0
    intervals: tuple[dt.timedelta, ...] = ()
    expression: str = ""

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
            return as_utc(croniter(self.expression, as_utc(now)).get_next(dt.datetime))
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
    raw = as_mapping(value, option, _COMMON + tuple(k for v in _SPECIFIC.values() for k in v))
    kind = as_choice(raw.get("type"), f"{option}.type", TYPES)
    for key in raw:
        if key not in _COMMON and key not in _SPECIFIC[kind]:
            raise ConfigError(f"{option}.{key}", raw[key], f"not an option of {kind} retries")
    fields: dict[str, Any] = {"type": kind}
    fields.update(_parse_limits(raw, option))
    fields.update(_parse_schedule(kind, raw, option))
    return RetryPolicy(**fields)


def _parse_limits(raw: Mapping[str, Any], option: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    max_duration = raw.get("max_duration")
    if max_duration is not None:
        fields["max_duration"] = parse_duration(max_duration, f"{option}.max_duration")
    attempts = raw.get("max_attempts")
    if attempts is None:
        fields["max_attempts"] = UNLIMITED if max_duration is not None else DEFAULT_MAX_ATTEMPTS
    else:
        attempts = as_int(attempts, f"{option}.max_attempts", minimum=UNLIMITED)
        if attempts == 0:
            raise ConfigError(f"{option}.max_attempts", attempts, "use -1 for unlimited, or >= 1")
        fields["max_attempts"] = attempts
    if "reset_retries_on_data_change" in raw:
        fields["reset_retries_on_data_change"] = as_bool(
            raw["reset_retries_on_data_change"], f"{option}.reset_retries_on_data_change"
        )
    if "jitter" in raw:
        jitter = raw["jitter"]
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise ConfigError(f"{option}.jitter", jitter, "expected a fraction from 0 to 1")
        fields["jitter"] = float(jitter)
    return fields


def _parse_schedule(kind: str, raw: Mapping[str, Any], option: str) -> dict[str, Any]:
    def required(key: str) -> Any:
        if raw.get(key) is None:
            raise ConfigError(f"{option}.{key}", None, f"required for {kind} retries")
        return raw[key]

    if kind in ("fixed", "linear"):
        interval = parse_duration(required("interval"), f"{option}.interval")
        return {"interval": interval}
    if kind == "series":
        intervals = required("intervals")
        if not isinstance(intervals, (list, tuple)) or not intervals:
            raise ConfigError(f"{option}.intervals", intervals, "expected a non-empty list")
        return {
            "intervals": tuple(
                parse_duration(item, f"{option}.intervals[{i}]") for i, item in enumerate(intervals)
            )
        }
    if kind == "cron":
        expression = required("expression")
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigError(f"{option}.expression", expression, "not a valid cron expression")
        return {"expression": expression}
    fields: dict[str, Any] = {}
    for key in ("min", "max"):
        if raw.get(key) is not None:
            fields[key] = parse_duration(raw[key], f"{option}.{key}")
    factor = raw.get("factor", 2)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
        raise ConfigError(f"{option}.factor", factor, "expected a number >= 1")
    fields["factor"] = float(factor)
    low = fields.get("min", DEFAULT_RETRY_POLICY.min)
    high = fields.get("max", DEFAULT_RETRY_POLICY.max)
    if low > high:
        raise ConfigError(f"{option}.min", raw.get("min"), f"greater than max ({high})")
    return fields
