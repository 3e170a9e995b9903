"""mongoreact's throughput, latency, round trips, CPU and memory, beside the reference.

    python -m benchmarks.engine [--uri URI] [--docs N] [--quick] [--focus] [--reference]
        [--json PATH] [--delay-ms MS]

Without --uri an embedded server is started. Scenarios (a no-op handler, debounce 0):

- throughput: tasks/s for N documents at concurrency 1, 5 and 20, with 1 and 3 instances;
- latency: write -> handler start, p50/p95/p99: at steady load (one write every 50 ms)
  and at low load (one write a second, the workers idle in between);
- commands per task, by kind, counted with the drivers' command monitoring;
- library CPU seconds per task (the library's processes; the server is another);
- memory: peak RSS of a fresh process reconciling 1 000 / 10 000 / 100 000 documents;
- with --reference: the same throughput and latency scenarios with the Node reference
  (npm ``mongodash``, installed into benchmarks/.reference) on the same server in the
  same run, and the ratios mongoreact / reference.

Both libraries are driven by the same harness (``benchmarks.drivers``): this process
writes the documents and times each run alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from mongoreact import ReactiveTasks
from mongoreact.config.options import InitOptions
from mongoreact.testing import EmbeddedServer

from .drivers import (
    STATEMENTS,
    TIMINGS,
    MongoreactRun,
    ReferenceRun,
    Run,
    install_reference,
    planner_ready,
    use_default_timings,
    wait,
)
from .proxy import ProxyProcess

Doc = dict[str, Any]
HERE = Path(__file__).resolve().parent
RUN_TIMEOUT = 1800.0
Library = Callable[..., Run]
LIBRARIES: dict[str, Library] = {"mongoreact": MongoreactRun, "reference": ReferenceRun}


# The embedded server's process, when the benchmark started it: its CPU time per run
# tells how busy the server was (a real server's is not visible from here).
_server_pid: list[int] = []


def _server_cpu_seconds() -> float | None:
    """The embedded server's CPU seconds so far (``None`` if unknown)."""
    if not _server_pid:
        return None
    try:
        with open(f"/proc/{_server_pid[0]}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime, the 14th and 15th fields (counted after the command name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _completed(db: Any, count: int, timeout: float) -> None:
    """Wait until ``count`` records are ``completed`` (asked only once every handler ran,
    so the polling does not load the server during the run)."""
    wait(
        lambda: db.items_tasks.count_documents({"status": "completed"}) >= count,
        timeout,
        f"{count} tasks to complete",
    )


def _measure(
    library: Library,
    uri: str,
    *,
    concurrency: int,
    instances: int,
    write: Callable[[Any], int],
    latency: bool = False,
) -> tuple[float, Any, float | None]:
    """Start ``library``, ``write`` the documents, wait for every task; the seconds from
    the first write to the last completion, what the library measured, and the
    embedded server's CPU seconds meanwhile (``None``: not known)."""
    name = f"bench_{ObjectId()}"
    observer: MongoClient[Doc] = MongoClient(uri)
    db = observer[name]
    try:
        run = library(uri, name, concurrency, instances, latency=latency)
        try:
            run.ready(120)
            run.count()
            server_before = _server_cpu_seconds()
            started = time.perf_counter()
            written = write(db)
            run.wait_runs(written, RUN_TIMEOUT)
            _completed(db, written, RUN_TIMEOUT)
            seconds = time.perf_counter() - started
            server_after = _server_cpu_seconds()
        finally:
            measured = run.finish()
    finally:
        observer.drop_database(name)
        observer.close()
    server = None if server_before is None or server_after is None else server_after - server_before
    return seconds, measured, server


def throughput(library: Library, uri: str, docs: int, concurrency: int, instances: int) -> Doc:
    """Tasks/s, commands per task and CPU per task for ``docs`` inserts."""

    def write(db: Any) -> int:
        for offset in range(0, docs, 100):
            db.items.insert_many([{"n": n} for n in range(offset, min(docs, offset + 100))])
        return docs

    seconds, measured, server_cpu = _measure(
        library, uri, concurrency=concurrency, instances=instances, write=write
    )
    counts = measured.commands
    statements = counts.pop(STATEMENTS, None)
    # Every command, the handler's own reads of its document included: they are part
    # of what a task costs (and what a batched read of the documents saves).
    library_commands = sum(counts.values())
    return {
        "docs": docs,
        "concurrency": concurrency,
        "instances": instances,
        "seconds": seconds,
        "tasks_per_s": docs / seconds,
        "commands_per_task": library_commands / docs,
        "commands_by_kind_per_task": {k: v / docs for k, v in sorted(counts.items())},
        "cpu_s_per_task": measured.cpu_seconds / docs,
        # Where known: the library's threads only (the benchmark's writer and observer
        # excluded); the reference's figure is its whole Node process.
        "library_cpu_s_per_task": (
            measured.library_cpu_seconds / docs
            if measured.library_cpu_seconds is not None
            else None
        ),
        "statements_per_task": statements / docs if statements is not None else None,
        # The embedded server's CPU per task, and the share of the run it was busy (its
        # commands run one at a time: near 1.0, the server bounds the run).
        "server_cpu_s_per_task": None if server_cpu is None else server_cpu / docs,
        "server_busy": None if server_cpu is None else server_cpu / seconds,
        # Per task for the threads that run tasks; the leader's, presence's, cleanup's
        # and pymongo's monitors' cost is per second (they would spend it idle too).
        "library_cpu_s_by_thread": {
            role: {"per_task": spent / docs, "per_s": spent / seconds}
            for role, spent in sorted(measured.library_cpu_by_role.items())
        },
    }


def latency(library: Library, uri: str, samples: int, interval: float = 0.05) -> Doc:
    """Write -> handler start, one write every ``interval`` seconds (concurrency 5)."""

    def write(db: Any) -> int:
        pause = threading.Event()
        for n in range(samples):
            db.items.insert_one({"n": n, "writtenAt": time.time() * 1000})
            pause.wait(interval)
        return samples

    _, measured, _ = _measure(library, uri, concurrency=5, instances=1, write=write, latency=True)
    return _percentiles(measured.latencies_ms)


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


def memory(uri: str, size: int, with_reference: bool) -> Doc:
    """Peak RSS of a fresh process that reconciles ``size`` documents (and of the
    reference doing the same, when asked)."""
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
        result: Doc = {"docs": size, **json.loads(child.stdout.strip().splitlines()[-1])}
        if with_reference:
            client[name].drop_collection("items_tasks")
            result["reference"] = _reference_memory(uri, name)
    finally:
        client.drop_database(name)
        client.close()
    return result


def _reference_memory(uri: str, name: str) -> Doc:
    started = time.perf_counter()
    run = ReferenceRun(uri, name, 5, 1, reconcile_only=True)
    try:
        run.ready(RUN_TIMEOUT)
        seconds = time.perf_counter() - started
    except TimeoutError as error:
        return {"error": str(error)}
    finally:
        measured = run.finish()
    return {
        "peak_rss_mb": measured.peak_rss_mb,
        "rss_before_start_mb": measured.rss_before_start_mb,
        "reconcile_s": seconds,
    }


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
    options: InitOptions = {**TIMINGS, "uri": uri, "database": name, "monitoring": False}
    engine = ReactiveTasks(**options)
    engine.register(task="bench", collection="items", handler=lambda ctx: None, filter={"n": -1})
    started = time.perf_counter()
    engine.start()
    client: MongoClient[Doc] = MongoClient(uri)
    planner_ready(client[name], RUN_TIMEOUT)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="300 documents, no 100k memory run")
    parser.add_argument("--reference", action="store_true", help="also run mongodash")
    parser.add_argument(
        "--focus",
        action="store_true",
        help="only issue 17's target scenario: throughput, 1 instance, concurrency 5",
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="the target scenario at 300 / 2 000 / 10 000 documents and 0 / 1 / 5 ms "
        "one-way delay, latency at each delay, and memory: one run for the whole table",
    )
    parser.add_argument(
        "--default-timings",
        action="store_true",
        help="both libraries on their default timings (without: the same short ones)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="one-way delay a local proxy adds to every byte, both ways (as over a network)",
    )
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    docs = 300 if args.quick else args.docs
    if args.default_timings:
        use_default_timings()
    if args.matrix:
        with contextlib.ExitStack() as stack:
            uri = args.uri or _embedded(stack)
            results = matrix(uri, args.reference)
        print_matrix(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        return
    with contextlib.ExitStack() as stack:
        uri = args.uri or _embedded(stack)
        uri = stack.enter_context(_delayed(uri, args.delay_ms))
        results = run(uri, docs, args.quick, args.reference, focus=args.focus)
        results["delay_ms"] = args.delay_ms
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def _embedded(stack: contextlib.ExitStack) -> str:
    """Start an embedded server for the benchmark; its URI."""
    server = stack.enter_context(EmbeddedServer())
    if server.pid is not None:
        _server_pid[:] = [server.pid]
    return server.uri


@contextlib.contextmanager
def _delayed(uri: str, delay_ms: float) -> Iterator[str]:
    """``uri``, through a latency proxy when ``delay_ms`` is more than 0."""
    if delay_ms <= 0:
        yield uri
        return
    host, port = parse_uri(uri)["nodelist"][0]
    with ProxyProcess(host, port, delay=delay_ms / 1000) as proxy:
        yield proxy.uri()


MATRIX_DOCS = (300, 2_000, 10_000)
MATRIX_DELAYS_MS = (0.0, 1.0, 5.0)
MATRIX_MEMORY_DOCS = (1_000, 10_000, 100_000)


def matrix(uri: str, with_reference: bool) -> Doc:
    """The performance targets' table from one run: the target scenario (one instance,
    concurrency 5, handlers reading their documents) at each size and delay, latency
    at each delay, and memory, for each library on the same server."""
    libraries = ["mongoreact"]
    skipped = install_reference() if with_reference else "not asked for (--reference)"
    if skipped is None:
        libraries.append("reference")
    results: Doc = {"machine": _machine(uri), "reference_skipped": skipped, "cells": []}
    for delay in MATRIX_DELAYS_MS:
        with _delayed(uri, delay) as through:
            for docs in MATRIX_DOCS:
                cell: Doc = {"delay_ms": delay, "docs": docs}
                for name in libraries:
                    cell[name] = throughput(LIBRARIES[name], through, docs, 5, 1)
                results["cells"].append(cell)
            cell = {"delay_ms": delay, "docs": None}
            for name in libraries:
                cell[name] = {
                    "latency": latency(LIBRARIES[name], through, 60),
                    "latency_low_load": latency(LIBRARIES[name], through, 15, interval=1.0),
                }
            results["cells"].append(cell)
    results["memory"] = [memory(uri, size, "reference" in libraries) for size in MATRIX_MEMORY_DOCS]
    return results


def _dig(result: Doc | None, path: tuple[str, ...]) -> float:
    """``result[path[0]][path[1]]...`` (0 where a library was not measured)."""
    value: Any = result or {}
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return float(value)


def _machine(uri: str) -> Doc:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "server": "embedded" if "127.0.0.1" in uri else "given by --uri",
        # Both libraries': the same short ones, or each its own defaults.
        "timings": dict(TIMINGS) or "defaults",
    }


def print_matrix(results: Doc) -> None:
    """The matrix as one table per measure, mongoreact beside the reference."""
    print(f"machine: {results['machine']}")
    has_reference = results.get("reference_skipped") is None

    def pair(cell: Doc, path: tuple[str, ...], form: str) -> str:
        """``cell``'s figure at ``path``: mongoreact's / the reference's (ratio)."""
        ours, theirs = (_dig(cell[name], path) for name in ("mongoreact", "reference"))
        if not has_reference:
            return format(ours, form)
        return f"{ours:{form}} / {theirs:{form}} ({ours / theirs:.2f}x)"

    for cell in results["cells"]:
        where = f"{cell['delay_ms']:g} ms"
        if cell["docs"] is None:
            for key, load in (("latency", "steady"), ("latency_low_load", "low")):
                p50, p95 = (pair(cell, (key, f"{p}_ms"), ".0f") for p in ("p50", "p95"))
                print(f"{where}, latency at {load} load: p50 {p50} ms, p95 {p95} ms")
            continue
        print(
            f"{where}, {cell['docs']} documents: "
            f"tasks/s {pair(cell, ('tasks_per_s',), '.1f')}; "
            f"round trips/task {pair(cell, ('commands_per_task',), '.2f')}; "
            f"lib CPU ms/task {cell['mongoreact']['library_cpu_s_per_task'] * 1000:.2f}"
        )
    for row in results["memory"]:
        reference = row.get("reference") or {}
        print(
            f"memory: {row['docs']:>7} docs: peak RSS {row['peak_rss_mb']:.1f} MB"
            + (
                f" (reference {reference['peak_rss_mb']:.1f} MB)"
                if "peak_rss_mb" in reference
                else ""
            )
        )


def run(uri: str, docs: int, quick: bool, with_reference: bool, *, focus: bool = False) -> Doc:
    """Every scenario (only the target one when ``focus``); the reference's beside
    mongoreact's when ``with_reference``."""
    libraries = ["mongoreact"]
    skipped = install_reference() if with_reference else "not asked for (--reference)"
    if skipped is None:
        libraries.append("reference")
    results: Doc = {
        "machine": _machine(uri),
        "docs": docs,
        "reference_skipped": skipped,
        "memory": [],
    }
    for name in libraries:
        library = LIBRARIES[name]
        shapes = [(1, 5)] if focus else [(i, c) for i in (1, 3) for c in (1, 5, 20)]
        rows = [
            throughput(library, uri, docs, concurrency, instances)
            for instances, concurrency in shapes
        ]
        results[name] = {"throughput": rows}
        if not focus:
            results[name]["latency"] = latency(library, uri, 60)
            results[name]["latency_low_load"] = latency(library, uri, 15, interval=1.0)
    sizes = () if focus else (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    for size in sizes:
        results["memory"].append(memory(uri, size, "reference" in libraries))
    if "reference" in results:
        results["ratios"] = ratios(results["mongoreact"], results["reference"])
    return results


def ratios(ours: Doc, reference: Doc) -> list[Doc]:
    """mongoreact / reference, scenario by scenario."""
    rows = []
    for mine, theirs in zip(ours["throughput"], reference["throughput"], strict=True):
        rows.append(
            {
                "scenario": f"{mine['instances']} instance(s), concurrency {mine['concurrency']}",
                "tasks_per_s": mine["tasks_per_s"] / theirs["tasks_per_s"],
                "commands_per_task": mine["commands_per_task"] / theirs["commands_per_task"],
                "cpu_per_task": mine["cpu_s_per_task"] / theirs["cpu_s_per_task"],
            }
        )
    rows.extend(
        {"scenario": key, "p50_latency": ours[key]["p50_ms"] / reference[key]["p50_ms"]}
        for key in ("latency", "latency_low_load")
        if key in ours and ours[key].get("p50_ms") and reference[key].get("p50_ms")
    )
    return rows


def print_table(results: Doc) -> None:
    delay = results.get("delay_ms") or 0
    print(
        f"machine: {results['machine']}, {results['docs']} documents"
        + (f", {delay:g} ms one-way delay through a proxy" if delay else "")
    )
    libraries = [name for name in LIBRARIES if name in results]
    print(
        f"{'library':>10} {'instances':>9} {'conc.':>5} {'tasks/s':>8} {'cmds/task':>9} "
        f"{'stmts/task':>10} {'CPU ms/task':>11} {'lib CPU ms/task':>15}"
    )
    for name in libraries:
        for row in results[name]["throughput"]:
            statements, library_cpu = (
                row.get("statements_per_task"),
                row.get("library_cpu_s_per_task"),
            )
            print(
                f"{name:>10} {row['instances']:>9} {row['concurrency']:>5} "
                f"{row['tasks_per_s']:>8.1f} {row['commands_per_task']:>9.2f} "
                f"{'-' if statements is None else f'{statements:.2f}':>10} "
                f"{row['cpu_s_per_task'] * 1000:>11.2f} "
                f"{'-' if library_cpu is None else f'{library_cpu * 1000:.2f}':>15}"
            )
    for name in libraries:
        for row in results[name]["throughput"]:
            kinds = ", ".join(
                f"{kind} {value:.2f}" for kind, value in row["commands_by_kind_per_task"].items()
            )
            print(f"{name} {row['instances']}x{row['concurrency']} commands/task: {kinds}")
            if row.get("server_busy") is not None:
                print(
                    f"{name} {row['instances']}x{row['concurrency']} embedded server: "
                    f"{row['server_cpu_s_per_task'] * 1000:.2f} ms CPU/task, "
                    f"busy {row['server_busy']:.0%} of the run"
                )
            by_thread = row.get("library_cpu_s_by_thread") or {}
            if by_thread:
                threads = ", ".join(
                    f"{role} {cost['per_task'] * 1000:.3f}" for role, cost in by_thread.items()
                )
                print(f"{name} {row['instances']}x{row['concurrency']} lib CPU ms/task: {threads}")
    for name in libraries:
        for key, load in (("latency", "steady load"), ("latency_low_load", "low load")):
            if key not in results[name]:
                continue  # --focus
            lat = results[name][key]
            print(
                f"{name} latency write->handler, {load}: p50 {lat['p50_ms']:.0f} ms, "
                f"p95 {lat['p95_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
                f"({lat['samples']} samples)"
            )
    for row in results["memory"]:
        print(
            f"memory: {row['docs']:>7} docs: peak RSS {row['peak_rss_mb']:.1f} MB "
            f"(reconciled in {row['reconcile_s']:.1f} s)"
        )
        ref = row.get("reference")
        if ref and "error" in ref:
            print(f"  reference: not measured: {ref['error']}")
        elif ref:
            print(
                f"  reference: peak RSS {ref['peak_rss_mb']:.1f} MB "
                f"(reconciled in {ref['reconcile_s']:.1f} s)"
            )
    if results.get("reference_skipped"):
        print(f"reference: not measured: {results['reference_skipped']}")
    for row in results.get("ratios", []):
        values = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "scenario")
        print(f"mongoreact / reference, {row['scenario']}: {values}")


if __name__ == "__main__":
    main()
