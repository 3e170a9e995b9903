"""Overload: how long one instance takes to drain a backlog, and whether it keeps its
leadership meanwhile.

``python -m benchmarks.drain [--uri URI] [--sizes 1000 10000] [--json FILE]``

For each timing set (``FAST_SETTINGS``, as docs/testing.md recommends for tests, with
a 1 s leader lease, and the defaults) and each backlog size, a lone instance with a
no-op handler that reads its document is started on a fresh database; the backlog is
written in one burst (``insert_many`` in chunks of 1 000, as fast as the server takes
them) and the drain is timed from the first write until every record is completed. The
instance's own counters give the leadership changes (elections after the first, and
leaderships lost) and the local lapses renewed in the same term.

Targets (issue 24): the 10 000 drain takes at most 12 times the 1 000 drain, with no
leadership change on a single instance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from mongoreact import ReactiveTasks, TaskContext
from mongoreact.testing import EmbeddedServer
from mongoreact.testing.helpers import FAST_SETTINGS

from .drivers import wait

Doc = dict[str, Any]
CHUNK = 1000
TIMINGS: dict[str, dict[str, Any]] = {"fast": dict(FAST_SETTINGS), "default": {}}


def _counter(engine: ReactiveTasks, name: str) -> int:
    values = engine.measurements.snapshot()["counters"][name]
    return int(sum(v["value"] for v in values))


def drain(uri: str, size: int, timings: dict[str, Any], timeout: float = 1800.0) -> Doc:
    """Drain ``size`` backlogged documents with one instance on ``timings``."""
    client: MongoClient[Doc] = MongoClient(uri)
    name = f"drain_{uuid.uuid4().hex[:10]}"
    db = client[name]
    engine = ReactiveTasks(uri=uri, database=name, **timings)

    def handler(ctx: TaskContext) -> None:
        ctx.get_document()

    engine.register(task="drain", collection="items", handler=handler, debounce=0)
    try:
        engine.start()
        wait(lambda: engine.is_leader, 60, "the instance to lead")
        began = time.monotonic()
        for start in range(0, size, CHUNK):
            db.items.insert_many([{"n": n} for n in range(start, min(size, start + CHUNK))])
        written = time.monotonic() - began
        # Counted four times a second: more often would load the server measured.
        pause = threading.Event()
        while db.items_tasks.count_documents({"status": "completed"}) < size:
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{size} documents not drained in {timeout:.0f} s")
            pause.wait(0.25)
        seconds = time.monotonic() - began
        elections = _counter(engine, "leader_elections")
        return {
            "size": size,
            "seconds": round(seconds, 2),
            "written_s": round(written, 2),
            "tasks_per_s": round(size / seconds, 1),
            "leadership_changes": max(0, elections - 1) + _counter(engine, "leader_lock_losses"),
            "lapses": _counter(engine, "leader_lapses"),
        }
    finally:
        engine.stop(timeout=30)
        client.drop_database(name)
        client.close()


def run(uri: str, sizes: list[int]) -> Doc:
    """Every timing set at every size, and the ratio of the largest to the smallest."""
    results: Doc = {}
    for label, timings in TIMINGS.items():
        rows = [drain(uri, size, timings) for size in sizes]
        smallest, largest = rows[0], rows[-1]
        results[label] = {
            "rows": rows,
            "ratio": round(largest["seconds"] / smallest["seconds"], 2),
            "size_ratio": largest["size"] / smallest["size"],
        }
    return results


def print_table(results: Doc) -> None:
    print(f"{'timings':8} {'docs':>7} {'drain s':>8} {'tasks/s':>8} {'changes':>8} {'lapses':>7}")
    for label, result in results.items():
        for row in result["rows"]:
            print(
                f"{label:8} {row['size']:>7} {row['seconds']:>8} {row['tasks_per_s']:>8} "
                f"{row['leadership_changes']:>8} {row['lapses']:>7}"
            )
        print(
            f"{label:8} largest/smallest drain: {result['ratio']}x "
            f"(for {result['size_ratio']:.0f}x the documents)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        uri = args.uri or stack.enter_context(EmbeddedServer()).uri
        results = run(uri, sorted(args.sizes))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
