"""Speed of the embedded MongoDB-compatible server, as pymongo sees it over TCP.

    python -m benchmarks.server_speed [--uri URI] [--json results.json]

Measures single-document writes against collections of 0 / 1 000 / 10 000 documents,
claim-style find_one_and_update with a sort, change-event latency, and how long another
client waits while an insert_many of 2 000 documents runs. Without --uri it starts an
embedded server; with --uri it measures that server instead (e.g. a real replica set).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection

from mongoreact.testing import EmbeddedServer

Doc = dict[str, Any]


def _rate(operation: Callable[[int], object], count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        operation(i)
    return count / (time.perf_counter() - started)


def _fill(coll: Collection[Doc], size: int) -> None:
    while (have := coll.estimated_document_count()) < size:
        step = min(1000, size - have)
        coll.insert_many([{"n": have + i, "status": "done"} for i in range(step)])


def _single_writes(coll: Collection[Doc], size: int) -> dict[str, float]:
    ids = [d["_id"] for d in coll.find({}, {"_id": 1}).limit(300)] or [None]

    def insert_object_id(i: int) -> object:
        return coll.insert_one({"v": i})

    def insert_int_id(i: int) -> object:
        return coll.insert_one({"_id": 10_000_000 + i})

    def update_by_id(i: int) -> object:
        return coll.update_one({"_id": ids[i % len(ids)]}, {"$inc": {"u": 1}})

    return {
        f"insert_one_objectid_per_s@{size}": _rate(insert_object_id, 300),
        f"insert_one_int_id_per_s@{size}": _rate(insert_int_id, 100),
        f"update_one_by_id_per_s@{size}": _rate(update_by_id, 300),
    }


def measure(uri: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    client: MongoClient[Doc] = MongoClient(uri)
    with client:
        db = client[f"bench_{ObjectId()}"]
        for size in (0, 1_000, 10_000):
            coll = db[f"size_{size}"]
            _fill(coll, size)
            results.update(_single_writes(coll, size))

        tasks = db.tasks
        tasks.create_index([("status", ASCENDING), ("due", ASCENDING)])
        tasks.insert_many([{"status": "pending", "due": i} for i in range(1000)])
        results["claim_find_one_and_update_sorted_per_s@1000"] = _rate(
            lambda i: tasks.find_one_and_update(
                {"status": "pending"}, {"$set": {"status": "processing"}}, sort=[("due", ASCENDING)]
            ),
            200,
        )

        latencies: list[float] = []
        with db.events.watch(max_await_time_ms=1000) as stream:
            for i in range(200):
                written = time.perf_counter()
                db.events.insert_one({"i": i})
                while stream.try_next() is None:
                    pass
                latencies.append((time.perf_counter() - written) * 1000)
        latencies.sort()
        results["change_event_latency_ms_p50"] = statistics.median(latencies)
        results["change_event_latency_ms_p95"] = latencies[int(len(latencies) * 0.95)]

        waits: list[float] = []
        done = threading.Event()

        def probe() -> None:
            other: MongoClient[Doc] = MongoClient(uri)
            with other:
                while not done.is_set():
                    started = time.perf_counter()
                    other[db.name].events.find_one({})
                    waits.append(time.perf_counter() - started)

        thread = threading.Thread(target=probe, name="bench-probe")
        thread.start()
        started = time.perf_counter()
        db.bulk.insert_many([{"i": i, "pad": "x" * 100} for i in range(2000)])
        results["insert_many_2000_seconds"] = time.perf_counter() - started
        done.set()
        thread.join()
        results["other_client_max_wait_ms_during_insert_many"] = max(waits) * 1000
        client.drop_database(db.name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="measure this server instead of an embedded one")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.uri:
        results = measure(args.uri)
    else:
        with EmbeddedServer() as server:
            results = measure(server.uri)
    results["machine"] = f"{platform.machine()}, {platform.python_version()}"
    width = max(map(len, results))
    for name, value in results.items():
        shown = f"{value:10.1f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
