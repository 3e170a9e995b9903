"""``Renewal``: the loop that keeps a lock's or a cron task's lease alive."""

from __future__ import annotations

import datetime as dt
import threading

from bson import ObjectId
from pymongo.errors import AutoReconnect

from mongoreact import ReactiveTasks
from mongoreact._threads import Renewal
from mongoreact.execution.leases import LeaseKeeper
from mongoreact.records import ClaimedTask


def test_transient_errors_are_retried_and_a_lost_lease_ends_the_loop_once() -> None:
    answers: list[object] = [AutoReconnect("blip"), True, False]
    calls = 0
    lost = threading.Event()
    lost_count = 0

    def renew() -> bool:
        nonlocal calls
        calls += 1
        answer = answers.pop(0) if answers else True
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    def on_lost() -> None:
        nonlocal lost_count
        lost_count += 1
        lost.set()

    renewal = Renewal("test-renewal", 0.01, renew, on_lost=on_lost)
    renewal.start()
    assert lost.wait(5)
    assert renewal.join(5)
    assert (calls, lost_count) == (3, 1)


def test_stopping_before_the_first_interval_renews_nothing() -> None:
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        return True

    renewal = Renewal("test-renewal", 60.0, renew)
    renewal.start()
    renewal.stop()
    assert renewal.join(5)
    assert calls == []


class _Leases:
    """A lease store that records what each renewal covered and reports ``lost``."""

    def __init__(self) -> None:
        self.renewed: list[set[object]] = []
        self.lost: set[object] = set()

    def renew(self, claims: list[ClaimedTask], lease: dt.timedelta) -> set[object]:
        self.renewed.append({c.claim_id for c in claims})
        return {c.claim_id for c in claims} & self.lost


def test_a_lease_is_renewed_until_its_finalize_is_written() -> None:
    """Regression: the renewal stopped when the run ended, before the finalize was
    written, so a slow finalize let another worker take the task and run it again."""
    store = _Leases()
    settings = ReactiveTasks(uri="mongodb://localhost/db").settings
    keeper = LeaseKeeper(settings=settings, store=store)
    claim = ClaimedTask(record={"_id": 1}, claim_id=ObjectId(), tasks_collection="t_tasks")
    keeper.hold(claim)
    assert keeper.finalizing(claim) is False  # the run ended: its result is being written
    store.lost = {claim.claim_id}  # the finalize landed first: the renewal finds nothing
    keeper.step()
    assert store.renewed == [{claim.claim_id}]
    assert keeper.release(claim) is False  # not reported lost: the finalize decides
    keeper.step()
    assert len(store.renewed) == 1  # released: renewed no more


def test_a_lease_lost_during_the_run_is_not_finalized() -> None:
    store = _Leases()
    settings = ReactiveTasks(uri="mongodb://localhost/db").settings
    keeper = LeaseKeeper(settings=settings, store=store)
    claim = ClaimedTask(record={"_id": 1}, claim_id=ObjectId(), tasks_collection="t_tasks")
    keeper.hold(claim)
    store.lost = {claim.claim_id}
    keeper.step()
    assert keeper.finalizing(claim) is True
    assert keeper.release(claim) is True
