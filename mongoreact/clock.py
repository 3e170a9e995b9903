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
    """The server's current time, estimated from one measured offset."""

    def __init__(self, local_now: Callable[[], dt.datetime] = utc_now) -> None:
        self._local_now = local_now
        self._offset = dt.timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """Estimated server time, aware UTC."""
        with self._lock:
            return self._local_now() + self._offset

    @property
    def offset(self) -> dt.timedelta:
        """Server time minus local time, as last measured."""
        with self._lock:
            return self._offset

    def sync(self, hello: Callable[[], dict[str, Any]]) -> None:
        """Measure the offset with one ``hello`` round trip (half the round trip assumed)."""
        before, started = self._local_now(), time.monotonic()
        reply = hello()
        elapsed = dt.timedelta(seconds=time.monotonic() - started)
        server_time = reply.get("localTime")
        if isinstance(server_time, dt.datetime):
            with self._lock:
                self._offset = as_utc(server_time) - (before + elapsed / 2)
