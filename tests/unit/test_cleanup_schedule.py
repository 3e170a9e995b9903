"""When the leader runs the next cleanup."""

from __future__ import annotations

import datetime as dt

from mongoreact.cleanup import next_cleanup

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def test_a_cleanup_that_never_ran_is_due_now() -> None:
    assert next_cleanup(None, dt.timedelta(hours=1)) is None


def test_an_interval_counts_from_the_last_cleanup() -> None:
    assert next_cleanup(NOW, dt.timedelta(hours=24)) == NOW + dt.timedelta(hours=24)


def test_a_cron_schedule_takes_the_next_match_after_the_last_cleanup() -> None:
    assert next_cleanup(NOW, "CRON 0 3 * * *") == NOW + dt.timedelta(hours=3)
    naive = NOW.replace(tzinfo=None)  # as pymongo returns dates by default
    assert next_cleanup(naive, "CRON 30 * * * *") == NOW + dt.timedelta(minutes=30)
