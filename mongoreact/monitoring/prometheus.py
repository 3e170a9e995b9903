"""Prometheus metrics: the six of the reference plus mongoreact's own (optional extra
``prometheus``; prometheus-client >= 0.20, through its documented custom-collector API).

``scrape_mode="cluster"`` (default): any instance reports cluster-wide figures, summed
from what every instance pushes to the globals collection each ``push_interval``
(instances not heard from for three intervals drop out), plus queue figures read from
the database. ``scrape_mode="local"``: this instance's own figures, plus the queue
figures only on the leader, so they are reported once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from .._retry import call_with_retry
from .._threads import Loop
from ..clock import ServerClock, as_utc
from ..config.settings import Settings
from ..records import QUEUED
from ..store.globals import GlobalsStore, MetricsStore
from ..store.tasks import TaskStore
from .measurements import BUCKETS, Measurements, merge

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

STALE_AFTER_PUSHES: Final = 3
_COUNTER_HELP: Final = {
    "retries": ("reactive_tasks_retries_total", "Failed runs that will be retried."),
    "leader_elections": ("reactive_tasks_leader_elections_total", "Leaderships won."),
    "leader_lock_losses": ("reactive_tasks_leader_lock_losses_total", "Leaderships lost."),
    "leader_lapses": (
        "reactive_tasks_leader_lapses_total",
        "Leases that lapsed locally and were renewed with nobody else leading meanwhile.",
    ),
    "task_lease_losses": ("reactive_tasks_lease_losses_total", "Runs whose task lease expired."),
    "change_stream_errors": ("reactive_tasks_change_stream_errors_total", "Change stream errors."),
    "change_stream_restarts": (
        "reactive_tasks_change_stream_restarts_total",
        "Change streams restarted from now, with a full reconciliation.",
    ),
    "planning_failures": ("reactive_tasks_planning_failures_total", "Planning passes that failed."),
    "poison_documents": ("reactive_tasks_poison_documents_total", "Unplannable documents."),
}  # fmt: skip

Figures = dict[str, Any]


class MetricsPusher(Loop):
    """Pushes this instance's measurements for the cluster scrape mode."""

    def __init__(
        self, *, settings: Settings, store: MetricsStore, measurements: Measurements
    ) -> None:
        super().__init__(f"mongoreact-metrics-{settings.instance_id}")
        self._settings = settings
        self._store = store
        self._measurements = measurements

    def step(self) -> float:
        snapshot = self._measurements.snapshot()
        call_with_retry(
            lambda: self._store.push(self._settings.instance_id, snapshot),
            self.stopping,
            what="pushing metrics",
        )
        return self._settings.monitoring.push_interval.total_seconds()

    def on_stop(self) -> None:
        try:
            self._store.drop(self._settings.instance_id)
        except Exception:
            logger.debug("could not remove this instance's metrics", exc_info=True)


class FigureReader:
    """Reads what a scrape reports: the measurements (this instance's, or the cluster's
    from what every instance pushed) and, where they belong, the queue figures."""

    def __init__(
        self,
        *,
        settings: Settings,
        measurements: Measurements,
        clock: ServerClock,
        task_store: TaskStore,
        globals_store: GlobalsStore,
        tasks: Callable[[], dict[str, str]],
        is_leader: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._measurements = measurements
        self._clock = clock
        self._tasks = task_store
        self._globals = globals_store
        self._tasks_known = tasks
        self._is_leader = is_leader

    def read(self) -> Figures:
        """The figures now (queue figures in the cluster mode, or on the leader)."""
        own = self._measurements.snapshot()
        cluster = self._settings.monitoring.scrape_mode == "cluster"
        figures: Figures = {"measurements": own}
        now = self._clock.now()
        if cluster:
            pushed = self._globals.metrics.pushed(stale_before(now, self._settings))
            figures["measurements"] = cluster_measurements(own, pushed, self._settings.instance_id)
        if cluster or self._is_leader():
            figures["queue"] = self._queue_figures(now)
        return figures

    def _queue_figures(self, now: dt.datetime) -> Figures:
        preference = self._settings.monitoring.read_preference
        known = self._tasks_known()
        queues = self._tasks.queue_summary(list(known.values()), now, preference)
        state = self._globals.position.document()
        position, reconciled = state.get("streamPositionAt"), state.get("reconciledAt")
        # Every known task and queued status, 0 when empty: a graph then shows 0, not
        # "no data", and an alert on a series cannot miss it for being absent.
        depth = {task: {s.value: 0 for s in QUEUED} for task in sorted({*known, *queues})}
        for task, queue in queues.items():
            depth[task].update(queue.counts)
        return {
            "depth": depth,
            "lag": {task: queue.lag for task, queue in queues.items() if queue.lag is not None},
            "stream_lag": max(0.0, (now - as_utc(position)).total_seconds()) if position else None,
            "reconciled_at": as_utc(reconciled).timestamp() if reconciled else None,
        }


def build_registry(read: Callable[[], Figures]) -> CollectorRegistry | None:
    """A registry whose one collector reports ``read()``; ``None`` without the extra."""
    try:
        from prometheus_client.registry import CollectorRegistry
    except ImportError:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(read))
    return registry


class _Collector:
    """prometheus-client custom collector: ``collect()`` yields metric families."""

    def __init__(self, read: Callable[[], Figures]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        figures = self._read()
        measured = figures["measurements"]
        duration = HistogramMetricFamily(
            "reactive_tasks_duration_seconds",
            "Handler run time by task and outcome.",
            labels=["task_name", "status"],
        )
        for entry in measured["histograms"]:
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], entry["buckets"], strict=False):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([entry["task"], entry["status"]], buckets, entry["sum"])
        yield duration
        for name, values in measured["counters"].items():
            metric, help_text = _COUNTER_HELP[name]
            per_task = name in ("retries", "planning_failures", "poison_documents")
            family = CounterMetricFamily(
                metric.removesuffix("_total"), help_text, labels=["task_name"] if per_task else []
            )
            for entry in values:
                family.add_metric([entry["task"]] if per_task else [], entry["value"])
            yield family
        queue = figures.get("queue")
        if queue is None:
            return
        depth = GaugeMetricFamily(
            "reactive_tasks_queue_depth", "Task records by status.", labels=["task_name", "status"]
        )
        lag = GaugeMetricFamily(
            "reactive_tasks_global_lag_seconds",
            "Age of the oldest due pending task, from its first unhandled change.",
            labels=["task_name"],
        )
        for task, statuses in queue["depth"].items():
            for status, count in statuses.items():
                depth.add_metric([task, status], count)
        for task, seconds in queue["lag"].items():
            lag.add_metric([task], seconds)
        yield depth
        yield lag
        stream_lag = GaugeMetricFamily(
            "reactive_tasks_change_stream_lag_seconds",
            "Time since the change stream position the planner has planned up to.",
        )
        if queue.get("stream_lag") is not None:
            stream_lag.add_metric([], queue["stream_lag"])
        yield stream_lag
        reconciled = GaugeMetricFamily(
            "reactive_tasks_last_reconciliation_timestamp_seconds",
            "When the last reconciliation finished (Unix time).",
        )
        if queue.get("reconciled_at") is not None:
            reconciled.add_metric([], queue["reconciled_at"])
        yield reconciled


def stale_before(now: dt.datetime, settings: Settings) -> dt.datetime:
    """Pushed figures older than this no longer count."""
    return now - settings.monitoring.push_interval * STALE_AFTER_PUSHES


def cluster_measurements(
    own: dict[str, Any], pushed: dict[str, dict[str, Any]], instance_id: str
) -> dict[str, Any]:
    """Every instance's pushed figures, with this instance's live ones instead of its own
    last push."""
    others = [snapshot for instance, snapshot in pushed.items() if instance != instance_id]
    return merge([own, *others])
