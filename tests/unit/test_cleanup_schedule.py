"""When the leader runs the next cleanup, and the schedule value object behind it."""

from __future__ import annotations

import datetime as dt
from typing import cast

import pytest

from mongoreact import ConfigError
from mongoreact.clock import ServerClock
from mongoreact.config.registry import TaskRegistry
from mongoreact.config.schedule import Schedule
from mongoreact.config.settings import build_settings
from mongoreact.planning.cleanup import Cleaner, next_cleanup
from mongoreact.store.globals import CleanupStateStore
from mongoreact.store.tasks import TaskStore

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


class _Globals:
    """The cleanup state of the globals store, counting its reads."""

    def __init__(self, last: dt.datetime) -> None:
        self.last_at: dt.datetime | None = last
        self.reads = 0

    def last(self) -> dt.datetime | None:
        self.reads += 1
        return self.last_at

    def mark_done(self) -> None:
        self.last_at = NOW


class _Clock:
    def __init__(self) -> None:
        self.time = NOW

    def now(self) -> dt.datetime:
        return self.time


def test_the_leader_reads_the_cleanup_state_again_only_once_the_cleanup_is_due() -> None:
    # It read it every heartbeat: one more round trip a heartbeat for a daily job.
    globals_, clock = _Globals(last=NOW - dt.timedelta(hours=1)), _Clock()
    settings = build_settings({"uri": "mongodb://h", "cleanup_interval": "2h"})
    cleaner = Cleaner(
        settings=settings, registry=TaskRegistry(), task_store=cast(TaskStore, None),
        cleanup_state=cast(CleanupStateStore, globals_), clock=cast(ServerClock, clock),
        is_leader=lambda: True,
    )  # fmt: skip
    for _ in range(5):
        assert cleaner.step() == settings.leader_heartbeat.total_seconds()
    assert globals_.reads == 1
    clock.time = NOW + dt.timedelta(hours=1, seconds=1)  # due: read, clean, read back
    cleaner.step()
    cleaner.step()
    assert globals_.reads == 3 and globals_.last_at == NOW
    clock.time += dt.timedelta(minutes=1)
    cleaner.step()
    assert globals_.reads == 3
