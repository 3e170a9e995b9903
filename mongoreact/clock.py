"""Time as the MongoDB server sees it.

Task leases and due times are compared on the server, so hosts whose clocks disagree
still agree on who owns what. Updates use ``$$NOW`` directly; queries that must stay
index-friendly (the claim's ``nextRunAt <= now``) use :meth:`ServerClock.now`, the
server's ``hello.localTime`` advanced by the host's monotonic clock, and check the
lease against ``$$NOW`` as well.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import attrs

UTC = dt.timezone.utc


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (pymongo returns naive UTC by default)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_now() -> dt.datetime:
    """The local wall clock, aware UTC."""
    return dt.datetime.now(UTC)


# Two samples disagreeing by more than their round trips allow, plus this much and
# a generous drift of the host's monotonic clock, mean the server's clock stepped (or
# a failover brought a primary whose clock differs): the older samples are dropped.
STEP_TOLERANCE: Final = 0.05  # seconds
MAX_DRIFT: Final = 1e-3  # seconds per second


@attrs.frozen
class _Sample:
    round_trip: float  # seconds
    at: float  # the host's monotonic clock at the middle of the round trip
    server_time: dt.datetime


class ServerClock:
    """The server's current time, estimated from ``hello`` samples.

    The estimate is the best sample's server time advanced by the host's *monotonic*
    clock since: a step of the host's wall clock (NTP correcting it, an operator setting
    it) changes nothing. Each ``sync`` is one ``hello`` round trip; the server answered
    somewhere within it, so a sample is off by at most half its round trip. A slow reply
    (a busy server) would skew the estimate by seconds, more than a task lease: the
    clock uses the sample with the shortest round trip among the last ``window`` ones,
    unless the newest contradicts it (the server's clock stepped). Before the first
    sample it is the host's wall clock.

    Nothing that decides ownership depends on this estimate alone: claims of task
    records and cron tasks check leases against the server's ``$$NOW``; the estimate
    only keeps their queries index-friendly and times local wake-ups.
    """

    def __init__(
        self,
        local_now: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        window: int = 8,
    ) -> None:
        self._local_now = local_now
        self._monotonic = monotonic
        self._samples: deque[_Sample] = deque(maxlen=window)
        self._best: _Sample | None = None
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """Estimated server time, aware UTC."""
        with self._lock:
            best = self._best
        if best is None:
            return self._local_now()
        return best.server_time + dt.timedelta(seconds=self._monotonic() - best.at)

    @property
    def offset(self) -> dt.timedelta:
        """Estimated server time minus the host's wall clock now (for diagnostics)."""
        return self.now() - self._local_now()

    def sync(self, hello: Callable[[], dict[str, Any]]) -> None:
        """Take one sample with a ``hello`` round trip."""
        started = self._monotonic()
        reply = hello()
        round_trip = self._monotonic() - started
        server_time = reply.get("localTime")
        if isinstance(server_time, dt.datetime):
            self.add_sample(as_utc(server_time), started, round_trip)

    def add_sample(self, server_time: dt.datetime, sent_at: float, round_trip: float) -> None:
        """Record that the server said ``server_time`` during a round trip that started
        at ``sent_at`` on the host's monotonic clock and took ``round_trip`` seconds."""
        sample = _Sample(round_trip, sent_at + round_trip / 2, server_time)
        with self._lock:
            if self._best is not None and _contradicts(self._best, sample):
                self._samples.clear()
            self._samples.append(sample)
            self._best = min(self._samples, key=lambda s: s.round_trip)


def _contradicts(old: _Sample, new: _Sample) -> bool:
    """Whether ``new`` cannot have come from the same server clock as ``old``."""
    elapsed = new.at - old.at
    predicted = old.server_time + dt.timedelta(seconds=elapsed)
    allowed = (old.round_trip + new.round_trip) / 2 + STEP_TOLERANCE + MAX_DRIFT * abs(elapsed)
    return abs((new.server_time - predicted).total_seconds()) > allowed
