"""Durations: every accepted spelling, and a clear error for the rest."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mongoreact import ConfigError
from mongoreact.config.durations import parse_duration, to_milliseconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, dt.timedelta(0)),
        (1500, dt.timedelta(milliseconds=1500)),
        (2.5, dt.timedelta(microseconds=2500)),
        (dt.timedelta(minutes=3), dt.timedelta(minutes=3)),
        ("500ms", dt.timedelta(milliseconds=500)),
        ("10s", dt.timedelta(seconds=10)),
        ("5m", dt.timedelta(minutes=5)),
        ("1h", dt.timedelta(hours=1)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
        ("1h30m", dt.timedelta(minutes=90)),
        ("1m 30s", dt.timedelta(seconds=90)),
        ("1.5s", dt.timedelta(milliseconds=1500)),
    ],
)
def test_accepted_durations(value: object, expected: dt.timedelta) -> None:
    assert parse_duration(value, "debounce") == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-5s",
        "",
        "5 parsecs",
        "s",
        "10x",
        True,
        None,
        [1],
        float("nan"),
        "1h-",
        "250",
        "36501d",
        10**30,
        "9" * 400 + "d",
    ],
)
def test_bad_durations_name_the_option_and_value(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "debounce")
    assert caught.value.option == "debounce"
    assert "debounce=" in str(caught.value)


def test_negative_timedelta_is_refused() -> None:
    with pytest.raises(ConfigError, match="negative"):
        parse_duration(dt.timedelta(seconds=-1), "keep_for")


@given(st.integers(min_value=0, max_value=10**12))
def test_milliseconds_round_trip(ms: int) -> None:
    assert to_milliseconds(parse_duration(ms, "x")) == ms
    assert to_milliseconds(parse_duration(f"{ms}ms", "x")) == ms


@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_compound_strings_add_up(hours: int, minutes: int, seconds: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s"
    assert parse_duration(text, "x") == dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
