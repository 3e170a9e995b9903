"""Durations as users write them: int milliseconds, ``timedelta`` or ``"1h30m"``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from ..errors import ConfigError

DurationLike = int | float | dt.timedelta | str

_UNITS: Final = {
    "ms": dt.timedelta(milliseconds=1),
    "s": dt.timedelta(seconds=1),
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
# Beyond any sensible delay, and small enough that "now + duration" stays a date.
MAX_DURATION: Final = dt.timedelta(days=36_500)
_PART: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*")


def parse_duration(value: object, option: str) -> dt.timedelta:
    """``value`` as a non-negative ``timedelta``; ``ConfigError`` naming ``option`` if not.

    Numbers are milliseconds. Strings are one or more ``<number><unit>`` parts with units
    ``ms``, ``s``, ``m``, ``h``, ``d`` and ``w`` (``"500ms"``, ``"1h30m"``, ``"1.5s"``); a
    bare number in a string is refused, its unit being a guess. At most 100 years
    (``MAX_DURATION``).
    """
    if isinstance(value, bool):
        raise ConfigError(option, value, "expected a duration, not a boolean")
    if isinstance(value, dt.timedelta):
        duration = value
    elif isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(option, value, "expected a finite number of milliseconds")
        try:
            duration = dt.timedelta(milliseconds=value)
        except OverflowError:
            raise ConfigError(option, value, "at most 100 years (36500d)") from None
    elif isinstance(value, str):
        duration = _parse_text(value, option)
    else:
        raise ConfigError(
            option, value, 'expected milliseconds, a timedelta or a string such as "10s"'
        )
    if duration < dt.timedelta(0):
        raise ConfigError(option, value, "a duration cannot be negative")
    if duration > MAX_DURATION:
        raise ConfigError(option, value, "at most 100 years (36500d)")
    return duration


def _parse_text(text: str, option: str) -> dt.timedelta:
    position, total = 0, dt.timedelta(0)
    stripped = text.strip()
    if stripped.isdigit():
        raise ConfigError(
            option,
            text,
            f'a number without a unit; write "{stripped}ms" or "{stripped}s" '
            f"(or the integer {stripped} for milliseconds)",
        )
    while position < len(text):
        match = _PART.match(text, position)
        if match is None or match.end() == position:
            break
        try:
            total += float(match.group(1)) * _UNITS[match.group(2)]
        except OverflowError:
            raise ConfigError(option, text, "at most 100 years (36500d)") from None
        position = match.end()
    if not stripped or position != len(text):
        raise ConfigError(
            option, text, 'malformed duration; use e.g. "500ms", "10s", "5m", "1h30m", "7d"'
        )
    return total


def to_milliseconds(duration: dt.timedelta) -> int:
    """Whole milliseconds, the unit MongoDB date arithmetic uses."""
    return int(duration / dt.timedelta(milliseconds=1))
