"""Helpers shared by the integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.database import Database

from mongoreact import ReactiveTasks
from mongoreact.cluster.specs import is_reconciled
from mongoreact.testing.helpers import FAST_SETTINGS

Doc = dict[str, Any]
T = TypeVar("T")

# Production timings are seconds; tests shorten them to keep runs quick (the timings
# the library offers its users' tests).
FAST: dict[str, Any] = FAST_SETTINGS


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        threading.Event().wait(0.02)


def reconciled(db: Database[Doc], engine: ReactiveTasks) -> bool:
    """Whether every task of ``engine`` has been reconciled (so the stream is open)."""
    meta = db[engine.settings.globals_collection].find_one({"_id": "planner"}) or {}
    done = set(meta.get("reconciled", []))
    return all(is_reconciled(d, done) for d in engine.definitions)


def start(engine: ReactiveTasks, db: Database[Doc]) -> ReactiveTasks:
    """Start ``engine`` and wait until some leader has its change stream open."""
    engine.start()
    wait_until(lambda: reconciled(db, engine), message="the planner to be ready")
    return engine


class Recorder:
    """A handler that records each run; optionally runs ``action`` too."""

    def __init__(self, action: Callable[[Any], object] | None = None, fetch: bool = True) -> None:
        self.runs: list[dict[str, Any]] = []
        self.action = action
        self.fetch = fetch
        self._lock = threading.Lock()

    def __call__(self, ctx: Any) -> None:
        document = ctx.get_document() if self.fetch else None
        with self._lock:
            self.runs.append(
                {
                    "doc_id": ctx.doc_id,
                    "attempt": ctx.attempt,
                    "watched": ctx.watched_values,
                    "document": document,
                    "thread": threading.current_thread().name,
                }
            )
        if self.action is not None:
            self.action(ctx)

    def ids(self) -> list[Any]:
        with self._lock:
            return [r["doc_id"] for r in self.runs]

    def count(self, doc_id: Any = None) -> int:
        with self._lock:
            return sum(1 for r in self.runs if doc_id is None or r["doc_id"] == doc_id)


def record(db: Database[Doc], collection: str, doc_id: Any, task: str | None = None) -> Doc:
    """The task record for ``doc_id`` (``{}`` if none)."""
    query: Doc = {"sourceDocId": doc_id}
    if task is not None:
        query["task"] = task
    return db[f"{collection}_tasks"].find_one(query) or {}


def record_when(
    db: Database[Doc],
    collection: str,
    doc_id: Any,
    predicate: Callable[[Doc], object],
    timeout: float = 10.0,
) -> Doc:
    """Wait until ``doc_id``'s task record satisfies ``predicate``; return the record."""
    found: list[Doc] = []

    def check() -> bool:
        current = record(db, collection, doc_id)
        if current and predicate(current):
            found.append(current)
            return True
        return False

    wait_until(check, timeout, f"the task record of {doc_id!r}")
    return found[-1]
