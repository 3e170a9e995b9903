"""What each instance measures: run durations, retries, elections, lost leases, stream
errors, planning failures and poison documents.

Plain thread-safe counters, kept whether or not prometheus-client is installed; the
``monitoring`` package turns them (and figures read from the database) into Prometheus
metrics. ``snapshot()`` is what an instance pushes for cluster-wide aggregation.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict, deque
from typing import Any, Final

from ..records import FAILED

# Run durations in seconds: handlers range from milliseconds to minutes.
BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RECENT_MINUTES: Final = 60
COUNTERS: Final = (
    "retries",  # per task: failed runs that will be retried
    "leader_elections",  # times this instance became the leader
    "leader_lock_losses",  # times it lost the leadership while leading
    "leader_lapses",  # leases that lapsed locally and were renewed with nobody between
    "task_lease_losses",  # runs whose task lease expired under them
    "change_stream_errors",
    "change_stream_restarts",  # streams restarted from now (history lost, unresumable)
    "planning_failures",  # planning passes that failed (and were retried or bisected)
    "poison_documents",  # documents parked because planning them fails
)


class Measurements:
    """One instance's counters and duration histograms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[str, float]] = {
            name: defaultdict(float) for name in COUNTERS
        }
        # (task, status) -> [bucket counts..., +Inf count], sum
        self._histograms: dict[tuple[str, str], tuple[list[int], float]] = {}
        # Runs per wall-clock minute, the last hour: [minute, finished, failed].
        self._minutes: deque[list[int]] = deque(maxlen=RECENT_MINUTES)

    def count(self, name: str, task: str = "", amount: float = 1) -> None:
        """Add ``amount`` to counter ``name`` (per task where it has one)."""
        with self._lock:
            self._counters[name][task] += amount

    def observe(self, task: str, status: str, seconds: float) -> None:
        """Record one run of ``task`` that ended with ``status`` after ``seconds``."""
        with self._lock:
            buckets, total = self._histograms.get((task, status), ([0] * (len(BUCKETS) + 1), 0.0))
            buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._histograms[(task, status)] = (buckets, total + seconds)
            minute = int(time.time() // 60)
            if not self._minutes or self._minutes[-1][0] != minute:
                self._minutes.append([minute, 0, 0])
            self._minutes[-1][2 if status == FAILED else 1] += 1

    def recent(self) -> list[dict[str, int]]:
        """Runs per minute over the last hour (``minute`` since the Unix epoch;
        ``finished`` counts every run that did not fail)."""
        oldest = int(time.time() // 60) - RECENT_MINUTES
        with self._lock:
            return [
                {"minute": minute, "finished": finished, "failed": failed}
                for minute, finished, failed in self._minutes
                if minute > oldest
            ]

    def totals(self) -> dict[str, int]:
        """Runs so far: ``finished`` (completed, skipped or deferred) and ``failed``."""
        with self._lock:
            failed = sum(sum(b) for (_, s), (b, _) in self._histograms.items() if s == FAILED)
            every = sum(sum(buckets) for buckets, _ in self._histograms.values())
        return {"finished": every - failed, "failed": failed}

    def snapshot(self) -> dict[str, Any]:
        """Everything so far, as a BSON-friendly document."""
        with self._lock:
            return {
                "counters": {
                    name: [{"task": task, "value": value} for task, value in values.items()]
                    for name, values in self._counters.items()
                },
                "histograms": [
                    {"task": task, "status": status, "buckets": list(buckets), "sum": total}
                    for (task, status), (buckets, total) in self._histograms.items()
                ],
            }


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several instances (for the cluster scrape mode)."""
    counters: dict[str, dict[str, float]] = {name: defaultdict(float) for name in COUNTERS}
    histograms: dict[tuple[str, str], tuple[list[int], float]] = {}
    for snapshot in snapshots:
        for name, values in snapshot.get("counters", {}).items():
            for entry in values:
                counters.setdefault(name, defaultdict(float))[entry["task"]] += entry["value"]
        for entry in snapshot.get("histograms", []):
            key = (entry["task"], entry["status"])
            buckets, total = histograms.get(key, ([0] * (len(BUCKETS) + 1), 0.0))
            histograms[key] = ([a + b for a, b in zip(buckets, entry["buckets"], strict=False)],
                               total + entry["sum"])  # fmt: skip
    return {
        "counters": {
            name: [{"task": task, "value": value} for task, value in values.items()]
            for name, values in counters.items()
        },
        "histograms": [
            {"task": task, "status": status, "buckets": buckets, "sum": total}
            for (task, status), (buckets, total) in histograms.items()
        ],
    }
