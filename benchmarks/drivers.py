"""The two libraries under benchmark, behind one interface.

A ``Run`` is one library running ``instances`` instances of a no-op task ``bench`` on
``<database>.items``. The harness in ``benchmarks.engine`` writes the documents and
times the run the same way for both: it waits for ``ready``, calls ``count`` just
before the first write, waits until every handler ran, then until every record is
``completed``, and ends with ``finish``, which reports the commands each library sent
(by kind), its CPU time and, with ``latency``, each handler start's delay after its
document's write.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol, cast

import attrs
from pymongo import MongoClient, monitoring

from mongoreact import ReactiveTasks, TaskContext
from mongoreact.config.options import InitOptions

Doc = dict[str, Any]
HERE = Path(__file__).resolve().parent
REFERENCE_DIR = HERE / ".reference"
REFERENCE_PACKAGES = ("mongodash@2.9.2", "mongodb@6")
# Timings shortened for both libraries alike: mongoreact's options, and the reference's
# scheduler's internal options (bench.mjs), the knobs its configureForTesting turns.
TIMINGS: InitOptions = {
    "poll_min": 20,
    "poll_max": 500,
    "batch_window": 20,
    "batch_max_wait": 200,
    "leader_heartbeat": 500,
    "leader_ttl": 5000,
}


def use_default_timings() -> None:
    """Run both libraries on their own default timings instead of ``TIMINGS`` (the
    per-second costs, leases and heartbeats, then weigh as they do in production)."""
    # A TypedDict has no ``clear``; at run time it is a plain dict.
    cast(dict[str, Any], TIMINGS).clear()


@attrs.define
class Measured:
    """What a run reports when it finishes."""

    commands: dict[str, int]
    cpu_seconds: float
    latencies_ms: list[float]
    peak_rss_mb: float | None = None  # the reference's (mongoreact's: a child process)
    rss_before_start_mb: float | None = None
    # mongoreact's own threads and its clients' (the harness's excluded), where the OS
    # says per thread (Linux); ``cpu_seconds`` is the whole benchmark process.
    library_cpu_seconds: float | None = None
    # The same by what the threads do (``dispatch``, ``worker``, ``leader``...).
    library_cpu_by_role: dict[str, float] = attrs.Factory(dict)


class Run(Protocol):
    """One library's instances, running."""

    def ready(self, timeout: float) -> None:
        """Wait until a leader watches the collection (every earlier document seen)."""

    def count(self) -> None:
        """Start counting commands and CPU time."""

    def wait_runs(self, runs: int, timeout: float) -> None:
        """Wait until handlers have run ``runs`` times in all."""

    def finish(self) -> Measured:
        """Stop the instances; what was counted since ``count``."""


def wait(check: Any, timeout: float, what: str) -> None:
    """Poll ``check`` every 20 ms until it is true; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(0.02)


# mongoreact


STATEMENTS = "statements"  # documents inserted, updated or deleted, whatever the batching


class Commands(monitoring.CommandListener):
    """Counts mongoreact's commands by kind while ``counting`` is set. A claim that
    finds nothing is counted as ``polling``; a ``getMore`` counts as the kind of the
    command that opened its cursor; ``statements`` counts the write statements (a bulk
    write of 16 updates is one command and 16 statements)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.counting = False
        self._claims: set[tuple[int, Any]] = set()
        self._opened: dict[tuple[int, Any], str] = {}  # requests that may open a cursor
        self._cursors: dict[int, str] = {}  # cursor id -> kind of its first command
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        key = (event.request_id, event.connection_id)
        if name == "getMore":
            with self._lock:
                kind = self._cursors.get(int(command.get("getMore", 0)), "other (getMore)")
        else:
            kind = _kind(name, command)
        with self._lock:
            if name in ("find", "aggregate"):
                self._opened[key] = kind
            if not self.counting:
                return
            self.counts[STATEMENTS] += (name == "findAndModify") + sum(
                len(command.get(field) or []) for field in ("updates", "documents", "deletes")
            )
            if kind == "claim" and name in ("find", "findAndModify"):
                self._claims.add(key)
            else:
                self.counts[kind] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        key = (event.request_id, event.connection_id)
        with self._lock:
            opened = self._opened.pop(key, None)
            cursor = event.reply.get("cursor", {}).get("id")
            if opened is not None and cursor:
                self._cursors[int(cursor)] = opened
            if key not in self._claims:
                return
            self._claims.discard(key)
            reply = event.reply
            empty = reply.get("value", 0) is None or reply.get("cursor", {}).get("firstBatch") == []
            self.counts["polling" if empty else "claim"] += 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            self._opened.pop((event.request_id, event.connection_id), None)
            if (event.request_id, event.connection_id) in self._claims:
                self._claims.discard((event.request_id, event.connection_id))
                self.counts["claim"] += 1


def _kind(name: str, command: Mapping[str, Any]) -> str:
    target = command.get(name)
    target = target if isinstance(target, str) else ""
    if name == "aggregate" and any("$changeStream" in stage for stage in command["pipeline"]):
        return "change stream"
    if name == "aggregate" and target == "items":
        return "planning"
    if target == "items_tasks":
        return _tasks_kind(name, command)
    if target == "_mongoreact_globals":
        return "coordination"
    if name == "find" and target == "items":
        return _source_read_kind(command)
    return f"other ({name})"


def _source_read_kind(command: Mapping[str, Any]) -> str:
    """A read of the source documents: the handler's own ``get_document`` (one
    document, by ``_id``), a claimed batch's read for its handlers (an ``$or`` of
    late-binding checks), or reconciliation and rechecks (pages of ``_id``s)."""
    query = command.get("filter") or {}
    if "$or" in query or any("$or" in clause for clause in query.get("$and", [])):
        return "document batch"
    if command.get("limit") == 1 and ("_id" in query or "$and" in query):
        return "get_document"
    return "reconciliation"


def _tasks_kind(name: str, command: Mapping[str, Any]) -> str:
    """What a command on the tasks collection is for, from the fields it sets."""
    if name == "findAndModify":
        return "claim" if "sort" in command else "finalize"
    if name == "find":
        # The batch claim's read (sorted), or its rare check of which claims it won.
        return "claim"
    if name != "update":
        return f"other ({name})"
    updates = command.get("updates") or [{}]
    fields = _set_fields(updates[0].get("u"))
    if "claimedBy" in fields:
        return "claim"
    if "lastFinalizedAt" in fields:
        return "finalize"
    if fields == {"nextRunAt"}:
        return "lease renewal"
    return "planning"  # the unmatched pass


def _set_fields(update: Any) -> set[str]:
    """The fields an update's ``$set`` stages (or operator) set: read from the
    command's structure, not its text (formatting every update as text was the
    harness's largest cost on mongoreact's threads)."""
    stages = update if isinstance(update, list) else [update or {}]
    fields: set[str] = set()
    for stage in stages:
        fields.update(stage.get("$set") or {})
    return fields


LIBRARY_THREADS = ("mongoreact-", "pymongo")


def library_threads_cpu() -> dict[int, tuple[str, float]]:
    """The role and CPU seconds so far of each thread of the library and its clients (by
    native id), from ``/proc/self/task/<tid>/schedstat`` (nanoseconds); empty where that
    does not exist. Threads that end between two readings take their time with them (an
    undercount, small: the pool's threads live as long as the run)."""
    found: dict[int, tuple[str, float]] = {}
    for thread in threading.enumerate():
        if thread.native_id is None or not thread.name.startswith(LIBRARY_THREADS):
            continue
        try:
            schedstat = Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text()
        except OSError:
            return {}
        found[thread.native_id] = (thread_role(thread.name), int(schedstat.split()[0]) / 1e9)
    return found


def thread_role(name: str) -> str:
    """What a thread does, from its name: ``mongoreact-worker-bench-0-3`` -> ``worker``
    (the instance id and pool index dropped); pymongo's monitors are ``pymongo``."""
    if name.startswith("pymongo"):
        return "pymongo"
    return name.removeprefix("mongoreact-").split("-", 1)[0]


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each role's threads used between two ``library_threads_cpu`` readings."""
    spent: dict[str, float] = {}
    for tid, (role, seconds) in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.get(tid, (role, 0.0))[1]
    return spent


def planner_ready(db: Any, timeout: float) -> None:
    """Wait until mongoreact's leader reconciled task ``bench`` (its stream is open)."""
    wait(
        lambda: db["_mongoreact_globals"].find_one(
            {"_id": "planner", "reconciled": {"$regex": "^bench@"}}
        ),
        timeout,
        "mongoreact's planner",
    )


class _Handler:
    """The benchmark's handler: reads its document, as real handlers do, and counts runs
    (so the harness need not poll the server, which would load the server it measures)
    and, for latency, each start's delay."""

    def __init__(self) -> None:
        self.runs = 0
        self.latencies_ms: list[float] = []
        self.changed = threading.Condition()

    def __call__(self, ctx: TaskContext) -> None:
        written = ctx.watched_values.get("writtenAt")
        started = time.time() * 1000
        ctx.get_document()
        with self.changed:
            if written is not None:
                self.latencies_ms.append(started - written)
            self.runs += 1
            self.changed.notify_all()


class MongoreactRun:
    """mongoreact: ``instances`` ``ReactiveTasks`` in this process, a client each."""

    def __init__(
        self,
        uri: str,
        database: str,
        concurrency: int,
        instances: int,
        latency: bool = False,
        **options: Any,
    ) -> None:
        # Latencies are recorded whenever a document carries ``writtenAt``.
        self._listener = Commands()
        self._handler = _Handler()
        self._clients: list[MongoClient[Doc]] = [
            MongoClient(uri, event_listeners=[self._listener], tz_aware=True)
            for _ in range(instances)
        ]
        self._observer: MongoClient[Doc] = MongoClient(uri)
        self._database = database
        self._cpu = 0.0
        self._engines = []
        for index, client in enumerate(self._clients):
            engine = ReactiveTasks(
                client=client, database=database, concurrency=concurrency,
                instance_id=f"bench-{index}", monitoring=False, **{**TIMINGS, **options},
            )  # fmt: skip
            engine.register(task="bench", collection="items", handler=self._handler, debounce=0)
            engine.start()
            self._engines.append(engine)

    def ready(self, timeout: float) -> None:
        planner_ready(self._observer[self._database], timeout)

    def count(self) -> None:
        self._listener.counting = True
        self._cpu = time.process_time()
        self._threads_cpu = library_threads_cpu()

    def wait_runs(self, runs: int, timeout: float) -> None:
        with self._handler.changed:
            if not self._handler.changed.wait_for(lambda: self._handler.runs >= runs, timeout):
                raise TimeoutError(f"{self._handler.runs} of {runs} runs after {timeout:.0f} s")

    def finish(self) -> Measured:
        self._listener.counting = False
        cpu = time.process_time() - self._cpu
        by_role = cpu_by_role(self._threads_cpu, library_threads_cpu())
        for engine in self._engines:
            engine.stop(timeout=10)
        for client in (*self._clients, self._observer):
            client.close()
        return Measured(
            dict(self._listener.counts), cpu, list(self._handler.latencies_ms),
            library_cpu_seconds=sum(by_role.values()) if by_role else None,
            library_cpu_by_role=by_role,
        )  # fmt: skip


# The reference


def install_reference() -> str | None:
    """Install mongodash into ``benchmarks/.reference`` (once); why not, if it cannot."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    if not (REFERENCE_DIR / "node_modules" / "mongodash").exists():
        REFERENCE_DIR.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(REFERENCE_DIR), *REFERENCE_PACKAGES],
            check=True,
            timeout=600,
        )
    shutil.copy(HERE / "reference" / "bench.mjs", REFERENCE_DIR / "bench.mjs")
    return None


class ReferenceRun:
    """mongodash: one Node process per instance (the library is a per-process singleton)."""

    def __init__(
        self,
        uri: str,
        database: str,
        concurrency: int,
        instances: int,
        latency: bool = False,
        reconcile_only: bool = False,
    ) -> None:
        mode = "memory" if reconcile_only else "latency" if latency else "throughput"
        self._observer: MongoClient[Doc] = MongoClient(uri)
        self._database = database
        self._runs = [0] * instances
        self._messages: list[list[Doc]] = [[] for _ in range(instances)]
        self._changed = threading.Condition()
        command = reference_command(_with_database(uri, database), concurrency, mode, TIMINGS)
        self._processes = [
            subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REFERENCE_DIR,
            )
            for _ in range(instances)
        ]
        for index, process in enumerate(self._processes):
            assert process.stdout is not None
            threading.Thread(
                target=self._read, args=(index, process.stdout), daemon=True,
                name=f"reference-{index}",
            ).start()  # fmt: skip
        self._wait_message("started", 60)

    def _read(self, index: int, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            with self._changed:
                if message["event"] == "ran":
                    self._runs[index] = message["runs"]
                else:
                    self._messages[index].append(message)
                self._changed.notify_all()

    def _wait_message(self, event: str, timeout: float) -> list[Doc]:
        def arrived() -> bool:
            return all(any(m["event"] == event for m in ms) for ms in self._messages)

        with self._changed:
            if not self._changed.wait_for(arrived, timeout):
                raise TimeoutError(f"the reference did not report {event!r}")
            return [next(m for m in ms if m["event"] == event) for ms in self._messages]

    def _send(self, line: str) -> None:
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def ready(self, timeout: float) -> None:
        # mongodash marks each task reconciled in its planner's meta document once its
        # change stream runs.
        globals_ = self._observer[self._database]["_mongodash_globals"]
        wait(
            lambda: globals_.find_one(
                {"_id": "_mongodash_planner_meta", "reconciliation.bench": True}
            ),
            timeout,
            "mongodash's planner",
        )

    def count(self) -> None:
        self._send("count")
        self._wait_message("counting", 30)

    def wait_runs(self, runs: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: sum(self._runs) >= runs, timeout):
                raise TimeoutError(f"{sum(self._runs)} of {runs} runs after {timeout:.0f} s")

    def finish(self) -> Measured:
        self._send("stop")
        results = self._wait_message("result", 60)
        for process in self._processes:
            process.wait(30)
        self._observer.close()
        commands: Counter[str] = Counter()
        for result in results:
            commands.update(result["commands"])
        return Measured(
            dict(commands),
            sum(r["cpuSeconds"] for r in results),
            [float(x) for r in results for x in r["latenciesMs"]],
            peak_rss_mb=max(r["peakRssKb"] for r in results) / 1024,
            rss_before_start_mb=max(r["rssBeforeStartKb"] for r in results) / 1024,
        )


def _with_database(uri: str, name: str) -> str:
    """``uri`` with ``name`` as its default database: mongodash plans only the client's
    default database (``client.db()``)."""
    scheme, _, rest = uri.partition("://")
    rest, _, options = rest.partition("?")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{name}" + (f"?{options}" if options else "")


def reference_command(
    uri: str, concurrency: int, mode: str, timings: Mapping[str, Any]
) -> list[str]:
    """The command line of one reference instance (``bench.mjs``); with no ``timings``
    the reference runs on its own defaults."""
    command = ["node", str(REFERENCE_DIR / "bench.mjs"), uri, str(concurrency), mode]
    if timings:
        command.append(json.dumps(_milliseconds(timings)))
    return command


def _milliseconds(timings: Mapping[str, Any]) -> dict[str, int]:
    """``TIMINGS`` in milliseconds, as the reference's options take them."""
    return {name: int(value) for name, value in timings.items()}
