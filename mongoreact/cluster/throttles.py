"""Throttles: task types this instance (or the whole cluster) must not claim for now.

``ctx.throttle_all(delay)`` pauses a task type on this instance, as in the reference.
``ctx.throttle_all(delay, scope="cluster")`` also records the pause in the globals
collection; every instance reads those at most once a second (``REFRESH``) while it
polls, so the whole cluster backs off from a failing dependency within about a second.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Final

from .._retry import log_failure
from ..clock import ServerClock
from ..store.globals import ThrottleStore

logger = logging.getLogger(__name__)

REFRESH: Final = 1.0  # seconds between reads of the cluster-wide throttles
SCOPES: Final = ("instance", "cluster")


class Throttles:
    """Local pauses plus a cached view of the cluster-wide ones."""

    def __init__(self, store: ThrottleStore | None, clock: ServerClock) -> None:
        self._store = store
        self._clock = clock
        self._local: dict[str, float] = {}  # task -> monotonic deadline
        self._cluster: dict[str, dt.datetime] = {}  # task -> server time
        self._read_at = -REFRESH
        self._lock = threading.Lock()

    def pause(self, task: str, seconds: float, *, cluster: bool = False) -> None:
        """Claim no ``task`` for ``seconds``; on every instance with ``cluster``."""
        until = time.monotonic() + max(0.0, seconds)
        with self._lock:
            self._local[task] = max(until, self._local.get(task, 0.0))
        if cluster and self._store is not None:
            self._store.pause(task, dt.timedelta(seconds=max(0.0, seconds)))
            logger.warning("task %s throttled cluster-wide for %.1fs", task, seconds)

    def is_paused(self, task: str) -> bool:
        """Whether ``task`` must not be claimed now."""
        now = time.monotonic()
        with self._lock:
            until = self._local.get(task)
            if until is not None and now >= until:
                del self._local[task]
                until = None
        if until is not None:
            return True
        cluster_until = self._cluster_view().get(task)
        return cluster_until is not None and cluster_until > self._clock.now()

    def _cluster_view(self) -> dict[str, dt.datetime]:
        if self._store is None:
            return {}
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < REFRESH:
                return self._cluster
            self._read_at = now
        try:
            view = self._store.pauses()
        except Exception as error:
            log_failure(logger, error, "could not read cluster throttles; keeping the last view")
            return self._cluster
        with self._lock:
            self._cluster = view
        return view
