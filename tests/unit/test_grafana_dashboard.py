"""The packaged Grafana dashboard only queries metrics mongoreact exports."""

from __future__ import annotations

import json
import re
from importlib import resources

from mongoreact.monitoring.prometheus import _COUNTER_HELP

EXPORTED = {
    "reactive_tasks_duration_seconds_bucket",
    "reactive_tasks_duration_seconds_count",
    "reactive_tasks_queue_depth",
    "reactive_tasks_global_lag_seconds",
    "reactive_tasks_change_stream_lag_seconds",
    "reactive_tasks_last_reconciliation_timestamp_seconds",
} | {name for name, _ in _COUNTER_HELP.values()}


def test_the_dashboard_ships_with_the_package_and_uses_real_metrics() -> None:
    text = resources.files("mongoreact").joinpath("grafana/reactive_tasks.json").read_text()
    dashboard = json.loads(text)
    assert dashboard["title"] == "Reactive Tasks - System Overview"
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"reactive_tasks_[a-z_]+", target["expr"])
    }
    assert used and used <= EXPORTED, used - EXPORTED
    assert {"reactive_tasks_queue_depth", "reactive_tasks_global_lag_seconds"} <= used
