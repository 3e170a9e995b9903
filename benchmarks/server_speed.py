"""Speed of the embedded MongoDB-compatible server, as pymongo sees it over TCP.

    python -m benchmarks.server_speed [--uri URI] [--sizes 1000,10000,100000] [--json PATH]

For each size N (default 1 000, 10 000 and 100 000 documents) it measures, on a
collection of N documents shaped like task records (half of them pending and due):

- single writes: ``insert_one`` with ObjectId and with integer ``_id``s, ``update_one``
  by ``_id`` (operations/s);
- ``insert_many`` of N integer-keyed documents into an empty collection (µs/document);
- reads by ``_id``: ``find_one`` and a ``$in`` of two ids, for int, long, double,
  string, ObjectId and mixed ``_id``s, a number asked as another numeric type (ms/read:
  flat in N when they are lookups);
- the claim: ``find_one_and_update`` of the most overdue pending record, sorted by due
  time on a ``{task, due}`` index (claims/s);
- keyset paging: the next 500 ``_id``s after a random one, sorted by ``_id`` (ms/page);
- for the claim, keyset paging and integer ``_id`` inserts, the first call apart: the
  embedded server builds the ordered index (or ``_id`` set) it uses then (once per
  collection), and the longest another client waited meanwhile;
- stalls: the longest wait of another client's ``find_one`` while a large command runs
  (``insert_many`` of 10 000 documents, ``update_many`` / ``delete_many`` of N/10,
  ``find`` of everything, a count and a ``$group`` over N);

and once, the latency from ``insert_one`` returning to the change event reaching a
watching client, and the latency of a ``find_one`` by ``_id`` on another connection
while 8 connections keep the server saturated with the library's own mix (claims,
finalizes and ``$merge`` plans of 5 documents): p50, p99 and the longest. Without
--uri it starts an embedded server; with --uri it measures that server instead (e.g. a
real replica set), so the two can be compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bson import Int64, ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from mongoreact.testing import EmbeddedServer

Doc = dict[str, Any]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PAGE = 500


def _rate(operation: Callable[[int], object], count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        operation(i)
    return count / (time.perf_counter() - started)


def _first_then_rate(
    operation: Callable[[int], object], count: int, uri: str, db_name: str
) -> tuple[float, float, float]:
    """Milliseconds of the first call (the embedded server builds the index it uses
    then, once per collection), the rate of the next ``count``, and the longest another
    client waited during the first call (ms)."""
    first: list[float] = []

    def first_call() -> None:
        started = time.perf_counter()
        operation(-1)
        first.append((time.perf_counter() - started) * 1000)

    waited = _longest_wait(uri, db_name, first_call)
    return first[0], _rate(operation, count), waited


def _record(n: int) -> Doc:
    pending = n % 2 == 0
    return {
        "n": n,
        "task": "bench",
        "status": "pending" if pending else "completed",
        "due": NOW - dt.timedelta(seconds=n) if pending else None,
        "pad": "x" * 100,
    }


def _fill(coll: Collection[Doc], size: int) -> None:
    for offset in range(0, size, 5000):
        coll.insert_many([_record(n) for n in range(offset, min(size, offset + 5000))])


def _single_writes(uri: str, coll: Collection[Doc], size: int) -> Doc:
    ids = [d["_id"] for d in coll.find({}, {"_id": 1}).limit(300)]

    def insert_object_id(i: int) -> object:
        return coll.insert_one({"v": i})

    def insert_int_id(i: int) -> object:
        return coll.insert_one({"_id": 10_000_000 + i})

    def update_by_id(i: int) -> object:
        return coll.update_one({"_id": ids[i % len(ids)]}, {"$inc": {"u": 1}})

    first, rate, waited = _first_then_rate(insert_int_id, 300, uri, coll.database.name)
    return {
        f"insert_one_objectid_per_s@{size}": _rate(insert_object_id, 300),
        f"insert_one_int_id_first_ms@{size}": first,
        f"insert_one_int_id_per_s@{size}": rate,
        f"longest_wait_ms_during_first_int_id_insert@{size}": waited,
        f"update_one_by_id_per_s@{size}": _rate(update_by_id, 300),
    }


def _insert_many_int_ids(db: Database[Doc], size: int) -> Doc:
    coll = db[f"int_ids_{size}"]
    started = time.perf_counter()
    for offset in range(0, size, 5000):
        coll.insert_many([{"_id": n} for n in range(offset, min(size, offset + 5000))])
    seconds = time.perf_counter() - started
    coll.drop()
    return {f"insert_many_int_id_us_per_doc@{size}": seconds / size * 1e6}


# _id types, each a function of the document's number (MongoDB's numeric equality:
# 1 == 1.0 == Int64(1), so a read by one finds a document stored under another).
ID_TYPES: dict[str, Callable[[int], Any]] = {
    "int": lambda n: n,
    "long": Int64,
    "double": float,
    "string": lambda n: f"id-{n}",
    "objectid": lambda n: ObjectId(f"{n:024x}"),
    "mixed": lambda n: (n, Int64(n), float(n), f"id-{n}", ObjectId(f"{n:024x}"))[n % 5],
}


def _reads_by_id(db: Database[Doc], size: int) -> Doc:
    """``find_one`` by ``_id`` and a ``$in`` of two ``_id``s, per ``_id`` type: flat
    in the collection's size when they are lookups (ms per read). Each read asks with a
    number of another type than the stored one where it can (a long for an int...)."""
    results: Doc = {}
    asked = {"int": float, "long": int, "double": Int64}
    for name, make in ID_TYPES.items():
        coll = db[f"ids_{name}_{size}"]
        for offset in range(0, size, 5000):
            coll.insert_many([{"_id": make(n)} for n in range(offset, min(size, offset + 5000))])
        ask = asked.get(name, make)
        picks = [random.randrange(size) for _ in range(200)]
        started = time.perf_counter()
        for n in picks:
            assert coll.find_one({"_id": ask(n)}) is not None
        results[f"find_one_by_id_ms[{name}]@{size}"] = (time.perf_counter() - started) * 5
        started = time.perf_counter()
        for n in picks:
            assert len(list(coll.find({"_id": {"$in": [ask(n), ask((n + 1) % size)]}}))) == 2
        results[f"in_two_ids_ms[{name}]@{size}"] = (time.perf_counter() - started) * 5
        coll.drop()
    return results


def _claims(uri: str, coll: Collection[Doc], size: int) -> Doc:
    coll.create_index([("task", ASCENDING), ("due", ASCENDING)])

    def claim(i: int) -> object:
        return coll.find_one_and_update(
            {"task": {"$in": ["bench"]}, "due": {"$lte": NOW}, "status": "pending"},
            {"$set": {"status": "processing", "due": NOW + dt.timedelta(hours=1)}},
            sort=[("due", ASCENDING)],
        )

    first, rate, waited = _first_then_rate(claim, 200, uri, coll.database.name)
    return {
        f"claim_sorted_first_ms@{size}": first,
        f"claim_sorted_per_s@{size}": rate,
        f"longest_wait_ms_during_first_claim@{size}": waited,
    }


def _keyset_pages(uri: str, coll: Collection[Doc], size: int) -> Doc:
    ids = [d["_id"] for d in coll.find({}, {"_id": 1}).limit(1000)]
    rng = random.Random(size)

    def page(i: int) -> object:
        after = rng.choice(ids)
        return list(coll.find({"_id": {"$gt": after}}, {"_id": 1}).sort("_id", 1).limit(PAGE))

    first, rate, waited = _first_then_rate(page, 40, uri, coll.database.name)
    return {
        f"keyset_page_{PAGE}_first_ms@{size}": first,
        f"keyset_page_{PAGE}_ms@{size}": 1000 / rate,
        f"longest_wait_ms_during_first_keyset_page@{size}": waited,
    }


def _probe(uri: str, db_name: str, ready: Any, done: Any, result: Any) -> None:
    """In a process of its own: ``find_one`` in a loop until ``done``; the longest
    wait (seconds) goes to ``result``."""
    longest = 0.0
    other: MongoClient[Doc] = MongoClient(uri)
    with other:
        other[db_name].probe.insert_one({})
        other[db_name].probe.find_one({})
        ready.set()
        while not done.is_set():
            started = time.perf_counter()
            other[db_name].probe.find_one({})
            longest = max(longest, time.perf_counter() - started)
    result.put(longest)


def _longest_wait(uri: str, db_name: str, command: Callable[[], object]) -> float:
    """Milliseconds: the longest another client waited for a find_one while
    ``command`` ran. The client is another process, so the command's own client-side
    work (building and encoding 10 000 documents holds this process's GIL) is not
    counted as the server's stall."""
    context = multiprocessing.get_context("spawn")
    ready, done, result = context.Event(), context.Event(), context.Queue()
    prober = context.Process(
        target=_probe, args=(uri, db_name, ready, done, result), name="bench-probe"
    )
    prober.start()
    ready.wait(60)
    command()
    done.set()
    longest = float(result.get(timeout=60))
    prober.join(timeout=60)
    return longest * 1000


def _stalls(uri: str, db: Database[Doc], coll: Collection[Doc], size: int) -> Doc:
    tenth = max(1, size // 10)
    commands: dict[str, Callable[[], object]] = {
        "insert_many_10000": lambda: db.stall_insert.insert_many(
            [{"i": i, "pad": "x" * 100} for i in range(10_000)]
        ),
        f"update_many_{tenth}": lambda: coll.update_many({"n": {"$lt": tenth}}, {"$inc": {"u": 1}}),
        f"find_all_{size}": lambda: list(coll.find({})),
        f"count_{size}": lambda: coll.count_documents({"status": "pending"}),
        f"group_{size}": lambda: list(
            coll.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        ),
        f"delete_many_{tenth}": lambda: coll.delete_many({"n": {"$lt": tenth}}),
    }
    results = {
        f"longest_wait_ms_during_{name}@{size}": _longest_wait(uri, db.name, command)
        for name, command in commands.items()
    }
    db.stall_insert.drop()
    return results


SATURATING_CONNECTIONS = 8
SATURATED_SECONDS = 10.0


def _library_mix(uri: str, db_name: str, ready: Any, done: Any) -> None:
    """In a process of its own: ``SATURATING_CONNECTIONS`` threads, each on its own
    connection, cycling through what mongoreact sends most: a claim (the most overdue
    pending record), its finalize, and a ``$merge`` planning a batch of 5 documents."""
    import threading

    def work(seed: int) -> None:
        rng = random.Random(seed)
        client: MongoClient[Doc] = MongoClient(uri, maxPoolSize=1)
        with client:
            db = client[db_name]
            ready.set()
            while not done.is_set():
                claimed = db.sat_records.find_one_and_update(
                    {"status": "pending", "due": {"$lte": NOW}},
                    {"$set": {"status": "processing"}},
                    sort=[("due", ASCENDING)],
                )
                if claimed is not None:
                    db.sat_records.update_one(
                        {"_id": claimed["_id"]}, {"$set": {"status": "pending", "due": NOW}}
                    )
                ids = [rng.randrange(2000) for _ in range(5)]
                db.sat_source.aggregate([
                    {"$match": {"_id": {"$in": ids}}},
                    {"$project": {"_id": 0, "sourceDocId": "$_id", "v": 1}},
                    {"$merge": {"into": "sat_tasks", "on": "sourceDocId",
                                "whenMatched": "merge", "whenNotMatched": "insert"}},
                ])  # fmt: skip

    threads = [
        threading.Thread(target=work, args=(seed,), name=f"bench-load-{seed}")
        for seed in range(SATURATING_CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _latency_probe(uri: str, db_name: str, done: Any, result: Any) -> None:
    """In a process of its own: ``find_one`` by ``_id`` in a loop until ``done``; every
    latency (seconds) goes to ``result``."""
    rng = random.Random(7)
    latencies: list[float] = []
    client: MongoClient[Doc] = MongoClient(uri)
    with client:
        source = client[db_name].sat_source
        while not done.is_set():
            started = time.perf_counter()
            source.find_one({"_id": rng.randrange(2000)})
            latencies.append(time.perf_counter() - started)
    result.put(latencies)


def _saturated_read_latency(uri: str, db: Database[Doc]) -> Doc:
    """Latency of another connection's ``find_one`` by ``_id`` while the library's own
    mix keeps the server saturated (issue target: p99 at most 50 ms)."""
    db.sat_source.insert_many([{"_id": i, "v": 0} for i in range(2000)])
    db.sat_records.insert_many(
        [{"task": "t", "status": "pending", "due": NOW, "n": i} for i in range(2000)]
    )
    db.sat_records.create_index([("status", ASCENDING), ("due", ASCENDING)])
    db.sat_tasks.create_index([("sourceDocId", ASCENDING)], unique=True)
    context = multiprocessing.get_context("spawn")
    ready, done, result = context.Event(), context.Event(), context.Queue()
    load = context.Process(target=_library_mix, args=(uri, db.name, ready, done))
    load.start()
    ready.wait(60)
    time.sleep(1.0)  # every load connection at work
    probe = context.Process(target=_latency_probe, args=(uri, db.name, done, result))
    probe.start()
    time.sleep(SATURATED_SECONDS)
    done.set()
    latencies = sorted(result.get(timeout=120))
    probe.join(timeout=60)
    load.join(timeout=60)
    for name in ("sat_source", "sat_records", "sat_tasks"):
        db.drop_collection(name)
    return {
        "saturated_find_one_by_id_ms_p50": statistics.median(latencies) * 1000,
        "saturated_find_one_by_id_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "saturated_find_one_by_id_ms_max": latencies[-1] * 1000,
        "saturated_find_one_by_id_reads": len(latencies),
    }


def _change_event_latency(db: Database[Doc]) -> Doc:
    latencies: list[float] = []
    with db.events.watch(max_await_time_ms=1000) as stream:
        for i in range(200):
            written = time.perf_counter()
            db.events.insert_one({"i": i})
            while stream.try_next() is None:
                pass
            latencies.append((time.perf_counter() - written) * 1000)
    latencies.sort()
    return {
        "change_event_latency_ms_p50": statistics.median(latencies),
        "change_event_latency_ms_p95": latencies[int(len(latencies) * 0.95)],
    }


def measure(uri: str, sizes: list[int]) -> Doc:
    results: Doc = {}
    client: MongoClient[Doc] = MongoClient(uri)
    with client:
        db = client[f"bench_{ObjectId()}"]
        try:
            results.update(_change_event_latency(db))
            results.update(_saturated_read_latency(uri, db))
            for size in sizes:
                coll = db[f"records_{size}"]
                _fill(coll, size)
                results.update(_single_writes(uri, coll, size))
                results.update(_insert_many_int_ids(db, size))
                results.update(_reads_by_id(db, size))
                results.update(_claims(uri, coll, size))
                results.update(_keyset_pages(uri, coll, size))
                results.update(_stalls(uri, db, coll, size))
                coll.drop()
        finally:
            client.drop_database(db.name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="measure this server instead of an embedded one")
    parser.add_argument("--sizes", default="1000,10000,100000", help="collection sizes")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.uri:
        results = measure(args.uri, sizes)
    else:
        with EmbeddedServer() as server:
            results = measure(server.uri, sizes)
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
