"""Time as the MongoDB server sees it.

Task leases and due times are compared on the server, so hosts whose clocks disagree
still agree on who owns what. Updates use ``$$NOW`` directly; queries that must stay
index-friendly (the claim's ``nextRunAt <= now``) use :meth:`ServerClock.now`, the local
clock corrected by the offset measured against the server's ``hello.localTime``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

UTC = dt.timezone.utc


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (pymongo returns naive UTC by default)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_now() -> dt.datetime:
    """The local wall clock, aware UTC."""
    return dt.datetime.now(UTC)


class ServerClock:
    """The server's current time, estimated from measured offsets.

    Each ``sync`` is one ``hello`` round trip; the server answered somewhere within it,
    so a sample is off by at most half its round trip. A slow reply (a busy server)
    would skew the estimate by seconds, more than a task lease: the clock uses the
    sample with the shortest round trip among the last ``window`` ones.
    """

    def __init__(
        self,
        local_now: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        window: int = 8,
    ) -> None:
        self._local_now = local_now
        self._monotonic = monotonic
        self._samples: deque[tuple[float, dt.timedelta]] = deque(maxlen=window)
        self._offset = dt.timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """Estimated server time, aware UTC."""
        with self._lock:
            return self._local_now() + self._offset

    @property
    def offset(self) -> dt.timedelta:
        """Server time minus local time, from the best recent sample."""
        with self._lock:
            return self._offset

    def sync(self, hello: Callable[[], dict[str, Any]]) -> None:
        """Take one sample with a ``hello`` round trip."""
        before, started = self._local_now(), self._monotonic()
        reply = hello()
        round_trip = self._monotonic() - started
        server_time = reply.get("localTime")
        if isinstance(server_time, dt.datetime):
            self.add_sample(as_utc(server_time), before, round_trip)

    def add_sample(self, server_time: dt.datetime, sent: dt.datetime, round_trip: float) -> None:
        """Record that the server said ``server_time`` during a round trip that started
        at local time ``sent`` and took ``round_trip`` seconds."""
        offset = server_time - (sent + dt.timedelta(seconds=round_trip / 2))
        with self._lock:
            self._samples.append((round_trip, offset))
            self._offset = min(self._samples, key=lambda sample: sample[0])[1]
