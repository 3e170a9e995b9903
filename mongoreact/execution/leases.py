"""Keeping the leases of running tasks alive.

One thread per instance renews every held lease each ``task_lease / 5`` in one update
per tasks collection. A claim the renewal no longer finds (the lease expired and
another worker took the task) is marked lost; its run's result will not be written.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from .._retry import call_with_retry
from .._threads import Loop
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..records import ClaimedTask, by_collection
from ..store.protocols import LeaseStore
from .admission import ConcurrencySlots

logger = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 5


class LeaseKeeper(Loop):
    """Renews the leases of the tasks this instance is running."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: LeaseStore,
        slots: ConcurrencySlots | None = None,
        measurements: Measurements | None = None,
    ) -> None:
        self._measurements = measurements or Measurements()
        self._slots = slots
        super().__init__(f"mongoreact-leases-{settings.instance_id}")
        self._settings = settings
        self._store = store
        self._held: dict[Any, ClaimedTask] = {}
        self._lost: set[Any] = set()
        self._finalizing: set[Any] = set()
        self._lock = threading.Lock()

    def hold(self, claim: ClaimedTask) -> None:
        """Start renewing ``claim``'s lease."""
        with self._lock:
            self._held[claim.claim_id] = claim

    def finalizing(self, claim: ClaimedTask) -> bool:
        """``claim``'s run is over and its result about to be written: keep renewing
        the lease until ``release``, but stop reporting it lost (a renewal that races
        the finalize finds the record finished, not taken). ``True`` if it had been
        lost already (nothing is kept then)."""
        with self._lock:
            if claim.claim_id in self._lost:
                return True
            self._finalizing.add(claim.claim_id)
            return False

    def release(self, claim: ClaimedTask) -> bool:
        """Stop renewing ``claim``'s lease; ``True`` if it had been lost meanwhile."""
        with self._lock:
            self._held.pop(claim.claim_id, None)
            self._finalizing.discard(claim.claim_id)
            lost = claim.claim_id in self._lost
            self._lost.discard(claim.claim_id)
            return lost

    def held(self) -> list[ClaimedTask]:
        """The claims whose leases are being renewed (running or waiting for a thread)."""
        with self._lock:
            return list(self._held.values())

    def is_lost(self, claim: ClaimedTask) -> bool:
        """Whether ``claim``'s lease was found lost by a renewal."""
        with self._lock:
            return claim.claim_id in self._lost

    def step(self) -> float:
        interval = self._settings.task_lease.total_seconds() / RENEWALS_PER_LEASE
        with self._lock:
            held = list(self._held.values())
        for claims in by_collection(held).values():
            lost = call_with_retry(
                functools.partial(self._store.renew, claims, self._settings.task_lease),
                self.stopping,
                what="renewing task leases",
                give_up_after=interval,
            )
            with self._lock:
                lost = lost & set(self._held) - self._finalizing
                self._lost |= lost
            if lost:
                logger.warning("lost the lease of %d running task(s)", len(lost))
                self._measurements.count("task_lease_losses", amount=len(lost))
        if self._slots is not None:
            self._slots.renew(held, self.stopping, within=interval)
        return interval
