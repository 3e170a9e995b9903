"""The benchmark harness measures what it says (a small run; speed is not asserted)."""

from __future__ import annotations

import pytest

from benchmarks.drivers import MongoreactRun
from benchmarks.engine import latency, throughput


def test_a_throughput_run_counts_every_task_and_its_commands(mongo_uri: str) -> None:
    row = throughput(MongoreactRun, mongo_uri, 30, concurrency=2, instances=2)
    kinds = row["commands_by_kind_per_task"]
    assert row["docs"] == 30 and row["tasks_per_s"] > 0 and row["cpu_s_per_task"] > 0
    # Every task was claimed and finalized: those commands were seen and sorted.
    assert kinds["claim"] > 0 and kinds["finalize"] > 0 and kinds["planning"] > 0
    assert row["commands_per_task"] == pytest.approx(sum(kinds.values()))  # no get_document


def test_a_latency_run_has_a_sample_per_write(mongo_uri: str) -> None:
    result = latency(MongoreactRun, mongo_uri, 5, interval=0.01)
    assert result["samples"] == 5
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] < 10_000
