"""Processes, load and the final accounting for the fault scenarios."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import attrs
from pymongo.database import Database

Doc = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]


class AppProcess:
    """One application instance (``tests.fault.app``) in its own OS process."""

    def __init__(self, uri: str, database: str, instance: str, *extra: str) -> None:
        self.instance = instance
        self.log: TextIO = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read after exit
        command = [sys.executable, "-m", "tests.fault.app", "--uri", uri, "--database",
                   database, "--instance", instance, *extra]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, leases and the leadership are left to expire."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def leader(db: Database[Doc]) -> str | None:
    """The instance holding an unexpired leader lease, per the server."""
    lease = db["_mongoreact_globals"].find_one({"_id": "leader"})
    if not lease:
        return None
    now = db.client.admin.command("hello")["localTime"]
    return lease["instanceId"] if lease["expiresAt"] > now else None


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Wait for ``condition()``; returns the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.02)
    return time.monotonic() - began


class Load:
    """Inserts ``total`` items in small batches from a background thread."""

    def __init__(self, db: Database[Doc], total: int, batch: int = 10, every: float = 0.05):
        self.db, self.total, self.batch, self.every = db, total, batch, every
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        pause = threading.Event()
        while self.written < self.total:
            count = min(self.batch, self.total - self.written)
            self.db.items.insert_many([{"n": self.written + i} for i in range(count)], ordered=True)
            self.written += count
            pause.wait(self.every)

    def join(self, timeout: float = 60) -> None:
        self._thread.join(timeout)
        assert self.written == self.total


@attrs.frozen
class Outcome:
    """The accounting of one scenario."""

    items: int
    runs: int
    lost: int
    duplicates: int
    expired: int  # extra runs whose claim was never finalized (lease expired)
    retried: int  # extra runs finalized as a failure and retried
    unexplained: int

    def line(self, scenario: str, recovery: str) -> str:
        return (
            f"[fault] {scenario}: items={self.items} runs={self.runs} lost={self.lost} "
            f"duplicates={self.duplicates} (lease expired {self.expired}, retried "
            f"{self.retried}, unexplained {self.unexplained}) recovery={recovery}"
        )


SUMMARY: list[str] = []  # one line per scenario, printed at the end of the run


def report(line: str) -> None:
    """Keep a scenario's summary line for the terminal summary (and print it)."""
    SUMMARY.append(line)
    print(line)


def done(db: Database[Doc], expected: int) -> bool:
    """Every expected item has a completed task record."""
    return db.items_tasks.count_documents({"status": "completed"}) >= expected


def wait_done(
    db: Database[Doc], expected: int, timeout: float, apps: list[AppProcess], what: str
) -> float:
    """``wait_for`` ``done``; a timeout says where the work is stuck: the task records
    by status, the oldest unfinished ones and the end of every app's log."""
    try:
        return wait_for(lambda: done(db, expected), timeout, what)
    except AssertionError as timed_out:
        statuses = {
            row["_id"]: row["n"]
            for row in db.items_tasks.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        }
        stuck = list(
            db.items_tasks.find({"status": {"$ne": "completed"}}, {"executionHistory": 0}).limit(3)
        )
        logs = "\n".join(f"--- {app.instance}\n{app.output()[-4000:]}" for app in apps)
        raise AssertionError(
            f"{timed_out}: {len(list(db.items.find({}, {'_id': 1})))} items, records by "
            f"status {statuses}, unfinished {stuck}\n{logs}"
        ) from None


def account(db: Database[Doc], query: Doc | None = None) -> Outcome:
    """Compare items, handler runs and task records."""
    items = [d["_id"] for d in db.items.find(query or {}, {"_id": 1})]
    runs_by_doc: dict[Any, list[Any]] = {}
    for run in db.runs.find({}, {"docId": 1, "claimId": 1}):
        runs_by_doc.setdefault(run["docId"], []).append(run["claimId"])
    records = {r["sourceDocId"]: r for r in db.items_tasks.find()}
    lost = duplicates = expired = retried = unexplained = 0
    for item in items:
        record, claims = records.get(item), runs_by_doc.get(item, [])
        if record is None or record["status"] != "completed" or not claims:
            lost += 1
            continue
        history = record.get("executionHistory", [])
        completed = [h["claimId"] for h in history if h["status"] == "completed"]
        failed = {h["claimId"] for h in history if h["status"] == "failed"}
        duplicates += len(claims) - 1
        counts = Counter(claims)
        for claim, seen in counts.items():
            if seen > 1:
                unexplained += seen - 1  # one claim ran twice: must never happen
            if claim in completed:
                continue
            if claim in failed:
                retried += 1
            else:
                expired += 1
        if len(completed) != 1:
            unexplained += 1  # completed twice, or the completing run is unaccounted for
    return Outcome(
        items=len(items), runs=sum(len(c) for c in runs_by_doc.values()), lost=lost,
        duplicates=duplicates, expired=expired, retried=retried, unexplained=unexplained,
    )  # fmt: skip
