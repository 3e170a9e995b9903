"""The benchmark harness measures what it says (a small run; speed is not asserted)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from benchmarks.drivers import TIMINGS, MongoreactRun, _kind, reference_command
from benchmarks.engine import latency, throughput
from benchmarks.proxy import LatencyProxy, ProxyProcess
from mongoreact.config.definition import build_definition
from mongoreact.records import Outcome, RunEnd
from mongoreact.store import pipelines


def test_a_throughput_run_counts_every_task_and_its_commands(mongo_uri: str) -> None:
    row = throughput(MongoreactRun, mongo_uri, 30, concurrency=2, instances=2)
    kinds = row["commands_by_kind_per_task"]
    assert row["docs"] == 30 and row["tasks_per_s"] > 0 and row["cpu_s_per_task"] > 0
    # Every task was claimed and finalized: those commands were seen and sorted.
    assert kinds["claim"] > 0 and kinds["finalize"] > 0 and kinds["planning"] > 0
    assert row["commands_per_task"] == pytest.approx(sum(kinds.values()))
    # The handler reads its document: on its own, or from its claimed batch's read.
    assert kinds.get("get_document", 0) + kinds.get("document batch", 0) > 0
    # Finalizes and claims write a statement per task at least (in fewer commands).
    assert row["statements_per_task"] >= 2
    # The library's own threads, the benchmark's excluded, where Linux says per thread.
    library = row["library_cpu_s_per_task"]
    assert library is None or 0 < library <= row["cpu_s_per_task"]
    # ... and by what its threads do: the ones that run tasks are there, and add up.
    by_thread = row["library_cpu_s_by_thread"]
    if library is not None:
        assert {"dispatch", "worker", "finalizer"} <= set(by_thread)
        spent = sum(cost["per_task"] for cost in by_thread.values())
        assert spent == pytest.approx(library)


def test_the_reference_gets_the_same_timings_or_runs_on_its_defaults() -> None:
    equal = reference_command("mongodb://h/db", 5, "throughput", TIMINGS)
    assert json.loads(equal[-1]) == {"poll_min": 20, "poll_max": 500, "batch_window": 20,
                                     "batch_max_wait": 200, "leader_heartbeat": 500,
                                     "leader_ttl": 5000}  # fmt: skip
    # Given nothing, bench.mjs leaves the reference's scheduler options alone.
    assert reference_command("mongodb://h/db", 5, "throughput", {})[-1] == "throughput"


def test_source_reads_are_told_apart() -> None:
    by_id = {"find": "items", "filter": {"_id": 7}, "limit": 1, "singleBatch": True}
    checked = {"find": "items", "filter": {"$and": [{"_id": 7}, {"n": 1}]}, "limit": 1}
    batch = {"find": "items", "filter": {"$and": [{"_id": {"$in": [7, 8]}},
                                                  {"$or": [{"_id": 7}, {"_id": 8}]}]}}  # fmt: skip
    page = {"find": "items", "filter": {"_id": {"$gt": 7}}, "projection": {"_id": 1},
            "sort": {"_id": 1}, "limit": 1000}  # fmt: skip
    assert [_kind("find", c) for c in (by_id, checked, batch, page)] == [
        "get_document", "get_document", "document batch", "reconciliation",
    ]  # fmt: skip
    stream = {"aggregate": 1, "pipeline": [{"$changeStream": {}}, {"$match": {}}]}
    assert _kind("aggregate", stream) == "change stream"


def test_updates_of_the_tasks_collection_are_told_apart() -> None:
    claim_id = ObjectId()
    finalize = pipelines.finalize_update(
        build_definition({"task": "t", "collection": "items", "handler": print}),
        RunEnd(outcome=Outcome.COMPLETED, duration_ms=1, instance_id="i"),
        attempt=1, claim_id=claim_id,
    )  # fmt: skip
    updates = {
        "claim": pipelines.claim_update(claim_id, "i", 1000),
        "finalize": pipelines.signed_finalize(finalize, claim_id),
        "lease renewal": pipelines.renew_update(1000),
        "planning": [{"$set": {"status": "pending"}}],
    }
    kinds = {
        kind: _kind("update", {"update": "items_tasks", "updates": [{"q": {}, "u": update}]})
        for kind, update in updates.items()
    }
    assert kinds == {kind: kind for kind in updates}


def test_a_latency_run_has_a_sample_per_write(mongo_uri: str) -> None:
    result = latency(MongoreactRun, mongo_uri, 5, interval=0.01)
    assert result["samples"] == 5
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] < 10_000


@pytest.mark.parametrize("proxy_class", [LatencyProxy, ProxyProcess])
def test_the_latency_proxy_adds_its_delay_to_every_round_trip(
    mongo_client: Any, proxy_class: type[LatencyProxy | ProxyProcess]
) -> None:
    host, port = mongo_client.address
    with proxy_class(host, port, delay=0.01) as proxy:
        client: MongoClient[Any] = MongoClient(proxy.uri(), serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("ping")  # connected
            started = time.perf_counter()
            for _ in range(5):
                client.admin.command("ping")
            per_round_trip = (time.perf_counter() - started) / 5
        finally:
            client.close()
    assert per_round_trip >= 0.02  # there and back, 10 ms each way
