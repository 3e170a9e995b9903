"""When the leader runs the next cleanup, and the schedule value object behind it."""

from __future__ import annotations

import datetime as dt

import pytest

from mongoreact import ConfigError
from mongoreact.config.schedule import Schedule
from mongoreact.planning.cleanup import next_cleanup

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def test_a_cleanup_that_never_ran_is_due_now() -> None:
    assert next_cleanup(None, Schedule.parse("1h", "cleanup_interval")) is None


def test_an_interval_counts_from_the_last_cleanup() -> None:
    daily = Schedule.parse(dt.timedelta(hours=24), "x")
    assert next_cleanup(NOW, daily) == NOW + dt.timedelta(hours=24)


def test_a_cron_schedule_takes_the_next_match_after_the_last_cleanup() -> None:
    assert next_cleanup(NOW, Schedule.parse("CRON 0 3 * * *", "x")) == NOW + dt.timedelta(hours=3)
    naive = NOW.replace(tzinfo=None)  # as pymongo returns dates by default
    half_past = Schedule.parse("cron 30 * * * *", "x")
    assert next_cleanup(naive, half_past) == NOW + dt.timedelta(minutes=30)


def test_a_schedule_reads_as_it_is_stored() -> None:
    assert Schedule.parse("cron  0 3 * * *", "x").description == "CRON 0 3 * * *"
    assert Schedule.parse("90s", "x").description == "every 0:01:30"

    def nightly(now: dt.datetime) -> dt.datetime:
        return now

    assert Schedule.parse(nightly, "x", functions=True).description == "callable nightly"


def test_a_function_schedule_never_goes_back_in_time() -> None:
    past = Schedule.parse(lambda now: now - dt.timedelta(hours=1), "x", functions=True)
    assert past.next_after(NOW) == NOW
    later = Schedule.parse(lambda now: "10m", "x", functions=True)
    assert later.next_after(NOW) == NOW + dt.timedelta(minutes=10)


@pytest.mark.parametrize("value", ["CRON not cron", 0, -5, "soon", print])
def test_bad_schedules_name_their_option(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        Schedule.parse(value, "cleanup_interval")
    assert caught.value.option == "cleanup_interval"


# Six fields: the seconds come first, as in the reference (cron-parser); croniter, which
# computes the times, wants them last. "*/5 * * * * *" read croniter's way would run
# every second of every fifth minute.
def test_six_fields_put_the_seconds_first() -> None:
    every_five_seconds = Schedule.parse("CRON */5 * * * * *", "x")
    assert every_five_seconds.next_after(NOW) == NOW + dt.timedelta(seconds=5)
    at_second_30_of_3am = Schedule.parse("CRON 30 0 3 * * *", "x")
    assert at_second_30_of_3am.next_after(NOW) == NOW + dt.timedelta(hours=3, seconds=30)
    assert every_five_seconds.description == "CRON */5 * * * * *"


@pytest.mark.parametrize(
    "expression", ["CRON * * * *", "CRON 0 0 0 * * * 2030", "CRON 70 * * * * *"]
)
def test_other_field_counts_and_bad_seconds_say_which_order_is_expected(expression: str) -> None:
    with pytest.raises(ConfigError, match="six with the seconds first"):
        Schedule.parse(expression, "schedule")
