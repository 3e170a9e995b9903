"""mongoreact's throughput, latency, round trips, CPU and memory, beside the reference.

    python -m benchmarks.engine [--uri URI] [--docs N] [--quick] [--reference] [--json PATH]

Without --uri an embedded server is started. Scenarios (a no-op handler, debounce 0):

- throughput: tasks/s for N documents at concurrency 1, 5 and 20, with 1 and 3 instances
  (instances are separate ``ReactiveTasks`` in this process);
- latency: write -> handler start, p50/p95/p99: at steady load (one write every 50 ms)
  and at low load (one write a second, the workers idle in between);
- commands per task, by kind, counted with pymongo's command monitoring;
- library CPU seconds per task (this process's CPU time; the server is another process);
- memory: peak RSS of a fresh process reconciling 1 000 / 10 000 / 100 000 documents;
- with --reference: the Node reference (npm ``mongodash``, installed into
  benchmarks/.reference) on the same server, reported as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import MongoClient, monitoring

from mongoreact import ReactiveTasks, TaskContext
from mongoreact.testing import EmbeddedServer

Doc = dict[str, Any]
HERE = Path(__file__).resolve().parent
REFERENCE_DIR = HERE / ".reference"
TIMINGS = {
    "poll_min": 20,
    "poll_max": 500,
    "batch_window": 20,
    "batch_max_wait": 200,
    "leader_heartbeat": 500,
    "leader_ttl": 5000,
}


class Commands(monitoring.CommandListener):
    """Counts commands by kind while ``counting`` is set. A claim that finds nothing is
    counted as ``polling``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.counting = False
        self._claims: set[tuple[int, Any]] = set()
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.counting:
            return
        kind = _kind(event.command_name, event.command)
        with self._lock:
            if kind == "claim" and event.command_name in ("find", "findAndModify"):
                self._claims.add((event.request_id, event.connection_id))
            else:
                self.counts[kind] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        with self._lock:
            if (event.request_id, event.connection_id) not in self._claims:
                return
            self._claims.discard((event.request_id, event.connection_id))
            reply = event.reply
            empty = reply.get("value", 0) is None or reply.get("cursor", {}).get("firstBatch") == []
            self.counts["polling" if empty else "claim"] += 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            if (event.request_id, event.connection_id) in self._claims:
                self._claims.discard((event.request_id, event.connection_id))
                self.counts["claim"] += 1


def _kind(name: str, command: Mapping[str, Any]) -> str:
    target = command.get(name)
    target = target if isinstance(target, str) else ""
    if name == "aggregate" and target == "items":
        return "planning"
    if target == "items_tasks":
        return _tasks_kind(name, command)
    if name == "getMore":
        return "change stream"  # the only cursor kept open (a database-level stream)
    if target == "_mongoreact_globals":
        return "coordination"
    if name == "find" and target == "items":
        return "get_document"
    return f"other ({name})"


def _tasks_kind(name: str, command: Mapping[str, Any]) -> str:
    """What a command on the tasks collection is for, from the fields it sets."""
    if name == "findAndModify":
        return "claim" if "sort" in command else "finalize"
    if name == "find":
        # The batch claim's read (sorted), or its rare check of which claims it won.
        return "claim"
    if name != "update":
        return f"other ({name})"
    text = str(command.get("updates", ""))
    if "claimedBy" in text:
        return "claim"
    if "lastFinalizedAt" in text:
        return "finalize"
    if "'nextRunAt': {'$add'" in text:
        return "lease renewal"
    return "planning"  # the unmatched pass


def _wait_completed(db: Any, count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while db.items_tasks.count_documents({"status": "completed"}) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} tasks did not complete")
        pause.wait(0.02)


def _ready(db: Any) -> None:
    pause = threading.Event()
    while not db["_mongoreact_globals"].find_one({"_id": "planner", "reconciled": "bench"}):
        pause.wait(0.02)


def throughput(uri: str, docs: int, concurrency: int, instances: int) -> dict[str, Any]:
    """Tasks/s, commands per task and CPU per task for ``docs`` inserts."""
    name = f"bench_{ObjectId()}"
    observer: MongoClient[Doc] = MongoClient(uri)
    listener = Commands()
    clients: list[MongoClient[Doc]] = [
        MongoClient(uri, event_listeners=[listener], tz_aware=True) for _ in range(instances)
    ]
    engines = []
    try:
        for index, client in enumerate(clients):
            engine = ReactiveTasks(
                client=client,
                database=name,
                concurrency=concurrency,
                instance_id=f"bench-{index}",
                monitoring=False,
                **TIMINGS,
            )
            engine.register(task="bench", collection="items", handler=lambda ctx: None, debounce=0)
            engine.start()
            engines.append(engine)
        db = observer[name]
        _ready(db)
        cpu = time.process_time()
        listener.counting = True
        started = time.perf_counter()
        for offset in range(0, docs, 100):
            db.items.insert_many([{"n": n} for n in range(offset, min(docs, offset + 100))])
        _wait_completed(db, docs)
        seconds = time.perf_counter() - started
        listener.counting = False
        cpu = time.process_time() - cpu
    finally:
        for engine in engines:
            engine.stop(timeout=10)
        observer.drop_database(name)
        observer.close()
        for client in clients:
            client.close()
    counts = dict(listener.counts)
    library = sum(v for k, v in counts.items() if k != "get_document")
    return {
        "docs": docs,
        "concurrency": concurrency,
        "instances": instances,
        "seconds": seconds,
        "tasks_per_s": docs / seconds,
        "commands_per_task": library / docs,
        "commands_by_kind_per_task": {k: v / docs for k, v in sorted(counts.items())},
        "cpu_s_per_task": cpu / docs,
    }


def latency(uri: str, samples: int, interval: float = 0.05) -> dict[str, Any]:
    """Write -> handler start, one write every ``interval`` seconds."""
    name = f"bench_{ObjectId()}"
    client: MongoClient[Doc] = MongoClient(uri, tz_aware=True)
    delays: list[float] = []

    def handler(ctx: TaskContext) -> None:
        delays.append(time.time() * 1000 - ctx.watched_values["writtenAt"])

    engine = ReactiveTasks(client=client, database=name, concurrency=5, monitoring=False, **TIMINGS)
    engine.register(task="bench", collection="items", handler=handler, debounce=0)
    engine.start()
    try:
        db = client[name]
        _ready(db)
        pause = threading.Event()
        for n in range(samples):
            db.items.insert_one({"n": n, "writtenAt": time.time() * 1000})
            pause.wait(interval)
        _wait_completed(db, samples)
    finally:
        engine.stop(timeout=10)
        client.drop_database(name)
        client.close()
    return _percentiles(delays)


def _percentiles(delays: list[float]) -> dict[str, Any]:
    ordered = sorted(delays)
    if not ordered:
        return {"samples": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "samples": len(ordered),
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": statistics.fmean(ordered),
    }


def memory(uri: str, size: int) -> dict[str, Any]:
    """Peak RSS of a fresh process that reconciles ``size`` documents."""
    name = f"bench_{ObjectId()}"
    client: MongoClient[Doc] = MongoClient(uri)
    try:
        for offset in range(0, size, 5000):
            client[name].items.insert_many(
                [{"n": n, "pad": "x" * 200} for n in range(offset, min(size, offset + 5000))]
            )
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.engine", "--memory-child", uri, name],
            capture_output=True,
            text=True,
            timeout=3600,
            check=True,
            cwd=HERE.parent,
        )
        result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        client.drop_database(name)
        client.close()
    return {"docs": size, **result}


def _peak_rss_kb() -> int:
    """This process's peak RSS in KiB.

    Linux's ``ru_maxrss`` survives ``execve``: a fresh child reports at least the RSS
    its parent had when it forked. ``VmHWM`` is the peak of this program alone.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(uri: str, name: str) -> None:
    """Reconcile every document of ``name.items`` (a filter nothing matches: no tasks run)
    and print the peak RSS."""
    baseline = _peak_rss_kb()
    engine = ReactiveTasks(uri=uri, database=name, monitoring=False, **TIMINGS)
    engine.register(task="bench", collection="items", handler=lambda ctx: None, filter={"n": -1})
    started = time.perf_counter()
    engine.start()
    client: MongoClient[Doc] = MongoClient(uri)
    _ready(client[name])
    seconds = time.perf_counter() - started
    engine.stop(timeout=10)
    client.close()
    peak = _peak_rss_kb()
    print(
        json.dumps(
            {
                "peak_rss_mb": peak / 1024,
                "rss_before_start_mb": baseline / 1024,
                "reconcile_s": seconds,
            }
        )
    )


def reference(uri: str, mode: str, docs: int, concurrency: int) -> dict[str, Any]:
    """The Node reference library on the same server (installs it on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return {"error": "node/npm not installed"}
    if not (REFERENCE_DIR / "node_modules" / "mongodash").exists():
        REFERENCE_DIR.mkdir(exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--prefix",
                str(REFERENCE_DIR),
                "mongodash@2.9.2",
                "mongodb@6",
            ],
            check=True,
            timeout=600,
        )
    shutil.copy(HERE / "reference" / "bench.mjs", REFERENCE_DIR / "bench.mjs")
    name = f"ref_{ObjectId()}"
    try:
        done = subprocess.run(
            [
                "node",
                str(REFERENCE_DIR / "bench.mjs"),
                _with_database(uri, name),
                name,
                mode,
                str(docs),
                str(concurrency),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REFERENCE_DIR,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 180 s (tasks did not complete)"}
    finally:
        cleaner: MongoClient[Doc] = MongoClient(uri)
        cleaner.drop_database(name)
        cleaner.close()
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": (done.stderr or "no output")[-300:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "latency":
        result.update(_percentiles(result.pop("latenciesMs")))
    return result


def _with_database(uri: str, name: str) -> str:
    """``uri`` with ``name`` as its default database: mongodash plans only the client's
    default database (``client.db()``)."""
    scheme, _, rest = uri.partition("://")
    rest, _, options = rest.partition("?")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="300 documents, no 100k memory run")
    parser.add_argument("--reference", action="store_true", help="also run mongodash")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    docs = 300 if args.quick else args.docs
    if args.uri:
        results = run(args.uri, docs, args.quick, args.reference)
    else:
        with EmbeddedServer() as server:
            results = run(server.uri, docs, args.quick, args.reference)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def run(uri: str, docs: int, quick: bool, with_reference: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "server": "embedded" if "127.0.0.1" in uri else uri,
        },
        "throughput": [],
        "memory": [],
    }
    for instances in (1, 3):
        for concurrency in (1, 5, 20):
            results["throughput"].append(throughput(uri, docs, concurrency, instances))
    results["latency"] = latency(uri, 60)
    results["latency_low_load"] = latency(uri, 15, interval=1.0)
    for size in (1_000, 10_000) if quick else (1_000, 10_000, 100_000):
        results["memory"].append(memory(uri, size))
    if with_reference:
        results["reference"] = {
            "throughput": reference(uri, "throughput", docs, 5),
            "latency": reference(uri, "latency", 60, 5),
        }
        results["ratios"] = ratios(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}")
    print(f"{'instances':>9} {'conc.':>5} {'tasks/s':>8} {'cmds/task':>9} {'CPU ms/task':>11}")
    for row in results["throughput"]:
        print(
            f"{row['instances']:>9} {row['concurrency']:>5} {row['tasks_per_s']:>8.1f} "
            f"{row['commands_per_task']:>9.2f} {row['cpu_s_per_task'] * 1000:>11.2f}"
        )
    five = next(r for r in results["throughput"] if r["instances"] == 1 and r["concurrency"] == 5)
    print("commands per task by kind (1 instance, concurrency 5):")
    for kind, value in five["commands_by_kind_per_task"].items():
        print(f"  {kind:<22} {value:6.2f}")
    for key, load in (("latency", "steady load"), ("latency_low_load", "low load")):
        lat = results[key]
        print(
            f"latency write->handler, {load}: p50 {lat['p50_ms']:.0f} ms, "
            f"p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms ({lat['samples']} samples)"
        )
    for row in results["memory"]:
        print(
            f"memory: {row['docs']:>7} docs: peak RSS {row['peak_rss_mb']:.0f} MB "
            f"(reconciled in {row['reconcile_s']:.1f} s)"
        )
    for mode, row in results.get("reference", {}).items():
        if "error" in row:
            print(f"reference {mode}: not measured: {row['error']}")
        elif mode == "throughput":
            commands = sum(row["commands"].values()) / max(row["completed"], 1)
            print(
                f"reference (1 instance, concurrency 5): {row['tasksPerSecond']:.1f} tasks/s, "
                f"{commands:.2f} commands/task, {row['cpuSecondsPerTask'] * 1000:.2f} CPU ms/task"
            )
        else:
            print(f"reference latency: p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms")
    for name, value in results.get("ratios", {}).items():
        print(f"mongoreact / reference, {name}: {value:.2f}")


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """mongoreact / reference for the scenarios both ran (1 instance, concurrency 5)."""
    ref = results.get("reference", {})
    ours = next(r for r in results["throughput"] if r["instances"] == 1 and r["concurrency"] == 5)
    found: dict[str, float] = {}
    throughput = ref.get("throughput", {})
    if throughput.get("completed"):
        found["tasks/s"] = ours["tasks_per_s"] / throughput["tasksPerSecond"]
        reference_commands = sum(throughput["commands"].values()) / throughput["completed"]
        found["commands/task"] = ours["commands_per_task"] / reference_commands
        found["CPU/task"] = ours["cpu_s_per_task"] / throughput["cpuSecondsPerTask"]
    latency = ref.get("latency", {})
    if latency.get("p50_ms"):
        found["p50 latency"] = results["latency"]["p50_ms"] / latency["p50_ms"]
    return found


if __name__ == "__main__":
    main()
