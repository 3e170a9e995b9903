"""Presence: every instance says it is alive, and what it is doing, every heartbeat.

One small document per instance in the globals collection (``instance:<id>``): host,
pid, when it started, whether it leads, the records it holds now, its run counts and
runs per minute over the last hour. The dashboard's instances panel and throughput chart
read them; an instance not heard from for three heartbeats is gone, and a stopped one
removes its document.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final

from .._retry import call_with_retry
from .._threads import Loop
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..records import ClaimedTask
from ..store.globals import PresenceStore

logger = logging.getLogger(__name__)

SHOWN_RUNS: Final = 20  # records in hand listed per instance
BEATS_BEFORE_GONE: Final = 3


class Beacon(Loop):
    """Writes this instance's presence every ``leader_heartbeat``."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: PresenceStore,
        measurements: Measurements,
        is_leader: Callable[[], bool],
        in_hand: Callable[[], list[ClaimedTask]],
    ) -> None:
        super().__init__(f"mongoreact-presence-{settings.instance_id}")
        self._settings = settings
        self._store = store
        self._measurements = measurements
        self._is_leader = is_leader
        self._in_hand = in_hand
        self._started = dt.datetime.now(dt.timezone.utc)

    def step(self) -> float:
        facts = self.facts()
        call_with_retry(
            lambda: self._store.beat(self._settings.instance_id, facts),
            self.stopping,
            what="recording this instance's presence",
        )
        return self._settings.leader_heartbeat.total_seconds()

    def facts(self) -> dict[str, Any]:
        """What this instance says about itself."""
        held = self._in_hand()
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "startedAt": self._started,
            "leader": self._is_leader(),
            "concurrency": self._settings.concurrency,
            "inHand": len(held),
            "runs": [
                {"task": claim.record.get("task"), "docId": claim.record.get("sourceDocId")}
                for claim in held[:SHOWN_RUNS]
            ],
            "totals": self._measurements.totals(),
            "perMinute": self._measurements.recent(),
        }

    def on_stop(self) -> None:
        try:
            self._store.forget(self._settings.instance_id)
        except Exception:
            logger.debug("could not remove this instance's presence", exc_info=True)


def gone_before(now: dt.datetime, settings: Settings) -> dt.datetime:
    """Instances that have not beaten since this are gone."""
    return now - settings.leader_heartbeat * BEATS_BEFORE_GONE
