"""Model-based test of planning, claiming and finalizing against a real server.

Hypothesis drives random interleavings through real ``ReactiveTasks`` instances: single
writes, bursts larger than ``batch_size``, deletes, re-plans inside a batch claim's
window, expired task leases (as when a worker is paused), history lost while writes go
unread (also in the middle of a reconciliation) and leader changes; and what operators
and deployments do: a rolling deploy that widens the filter (v1 instances replaced one
at a time by v2 ones, so both run side by side meanwhile), the lease document deleted,
the globals collection restored from a snapshot, the tasks collection dropped, and an
instance's clock estimate stepped by up to two minutes either way. The model keeps each
document's last version. The invariant, checked once the instances have caught up:

    every document whose last version matches the final definition's filter has had
    that version handled by a successful run, or its record is ``failed`` with the
    error.

``MONGOREACT_MODEL_EXAMPLES`` raises the number of examples for a soak run.
``MONGOREACT_MODEL_RESTORES=1`` adds the globals collection restored from a snapshot to
the rules: soak runs with it found five ways a restore under running instances lost
versions (fixed, each with a regression test in test_operations.py and test_no_loss.py)
and still find, about once in a hundred examples, a loss after several restores
combined with lost history and a dropped tasks collection (open; docs/reliability.md).
CI runs without it until that is fixed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from mongoreact import ReactiveTasks, TaskContext
from mongoreact.records import ACTIVE
from mongoreact.store.tasks import TaskStore

from .helpers import FAST, Doc

EXAMPLES = int(os.environ.get("MONGOREACT_MODEL_EXAMPLES", "6"))
STEPS = 14
DOC_IDS = st.integers(min_value=0, max_value=29)
STATUSES = st.sampled_from(["paid", "new", "settled"])
# v1 plans paid documents; v2, deployed during a run, settled ones too.
FILTERS: dict[int, Doc] = {1: {"status": "paid"}, 2: {"status": {"$in": ["paid", "settled"]}}}
MATCHING = {1: {"paid"}, 2: {"paid", "settled"}}
CLOCK_STEP_LASTS = 1.0  # seconds: about a FAST leader heartbeat, when a sample corrects it
SETTLE_TIMEOUT = 90.0
RESTORES = os.environ.get("MONGOREACT_MODEL_RESTORES") == "1"  # see the docstring


class Flaky(Exception):
    """A handler failure the retry policy absorbs."""


class Hooks:
    """Test seams patched into pymongo for the machine's interleavings."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_claim: list[Any] = []  # callables run inside the next batch claim's window
        self.hold_reader = threading.Event()  # the next try_next blocks ...
        self.reader_held = threading.Event()
        self.release_reader = threading.Event()  # ... until this is set
        self.lose_history = False  # and then fails with ChangeStreamHistoryLost

    def before_bulk_write(self, collection: Collection[Doc]) -> None:
        if not collection.name.endswith("_tasks"):
            return
        with self.lock:
            pending, self.in_claim = self.in_claim, []
        for action in pending:
            action()

    def before_try_next(self) -> None:
        if not self.hold_reader.is_set():
            return
        self.hold_reader.clear()
        self.reader_held.set()
        self.release_reader.wait(10)
        self.release_reader.clear()
        if self.lose_history:
            self.lose_history = False
            raise OperationFailure("history lost (test)", code=286)


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    seams = Hooks()
    bulk_write, try_next = Collection.bulk_write, ChangeStream.try_next

    def patched_bulk_write(self: Collection[Doc], *args: Any, **kwargs: Any) -> Any:
        seams.before_bulk_write(self)
        return bulk_write(self, *args, **kwargs)

    def patched_try_next(self: ChangeStream[Doc]) -> Any:
        seams.before_try_next()
        return try_next(self)

    monkeypatch.setattr(Collection, "bulk_write", patched_bulk_write)
    monkeypatch.setattr(ChangeStream, "try_next", patched_try_next)
    yield seams
    seams.release_reader.set()


class Handled:
    """What the handler saw: the versions each successful run read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[int, set[int]] = {}
        self.random = random.Random(0)

    def __call__(self, ctx: TaskContext) -> None:
        document = ctx.get_document()  # the late-binding check: this run's snapshot
        with self.lock:
            flaky = self.random.random() < 0.1
        if flaky:
            raise Flaky("fails one run in ten")
        with self.lock:
            self.versions.setdefault(document["_id"], set()).add(document["v"])


def make_machine(uri: str, hooks: Hooks) -> type[RuleBasedStateMachine]:
    class Planning(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.client: MongoClient[Doc] = MongoClient(uri, tz_aware=True)
            self.name = f"model_{uuid.uuid4().hex[:10]}"
            self.db = self.client[self.name]
            self.handled = Handled()
            self.model: dict[int, tuple[int, str]] = {}  # id -> (version, status)
            self.version = 0
            self.engines: list[ReactiveTasks] = []
            self.versions: dict[str, int] = {}  # instance -> the definition it runs
            self.deploying = 1  # the definition new instances run
            self.started = 0
            self._start_instance()
            self.backup = list(self.db["_mongoreact_globals"].find())

        # Instances.

        def _start_instance(self) -> None:
            self.started += 1
            name = f"app-{self.started}-v{self.deploying}"
            engine = ReactiveTasks(
                **{**FAST, "uri": uri, "database": self.name, "batch_size": 5,
                   "concurrency": 2, "instance_id": name}
            )  # fmt: skip
            engine.register(
                task="sync", collection="items", handler=self.handled,
                filter=FILTERS[self.deploying], watch_projection={"v": 1, "status": 1},
                debounce=30, max_debounce=40,
                retry_policy={"type": "fixed", "interval": 20, "max_attempts": 20},
            )  # fmt: skip
            engine.start()
            self.engines.append(engine)
            self.versions[name] = self.deploying

        def _stop(self, engine: ReactiveTasks) -> None:
            self.engines.remove(engine)
            engine.stop(timeout=5)

        @rule()
        def rolling_deploy_step(self) -> None:
            """Replace one v1 instance by a v2 one (v2 widens the filter)."""
            self.deploying = 2
            old = [e for e in self.engines if self.versions[e.instance_id] == 1]
            self._start_instance()
            if old:
                self._stop(old[0])

        @rule()
        def change_leader(self) -> None:
            """Stop the leader (or the oldest instance) and start a new one."""
            leader = next((e for e in self.engines if e.is_leader), self.engines[0])
            self._stop(leader)
            if not self.engines:
                self._start_instance()

        @rule()
        def add_instance(self) -> None:
            if len(self.engines) < 3:
                self._start_instance()

        # Writes.

        def _write(self, doc_id: int, status: str) -> None:
            with lock:  # rules and claim hooks write
                self.version += 1
                self.db.items.replace_one(
                    {"_id": doc_id},
                    {"_id": doc_id, "v": self.version, "status": status},
                    upsert=True,
                )
                self.model[doc_id] = (self.version, status)

        @rule(doc_id=DOC_IDS, status=STATUSES)
        def write(self, doc_id: int, status: str) -> None:
            self._write(doc_id, status)

        @rule(first=DOC_IDS, size=st.integers(min_value=6, max_value=24))
        def burst(self, first: int, size: int) -> None:
            """More documents in one command than a planning batch holds."""
            with lock:
                documents = []
                for offset in range(size):
                    self.version += 1
                    doc_id = 100 + (first * 7 + offset) % 60
                    documents.append({"_id": doc_id, "v": self.version, "status": "paid"})
                    self.model[doc_id] = (self.version, "paid")
                self.db.items.delete_many({"_id": {"$in": [d["_id"] for d in documents]}})
                self.db.items.insert_many(documents)

        @rule(doc_id=DOC_IDS)
        def delete(self, doc_id: int) -> None:
            with lock:
                self.db.items.delete_one({"_id": doc_id})
                self.model.pop(doc_id, None)

        @rule(doc_id=DOC_IDS)
        def replan_during_a_claim(self, doc_id: int) -> None:
            """Change a document and plan it between a batch claim's read and update."""
            store, definition = TaskStore(self.db), self.engines[0].definitions[0]

            def change() -> None:
                self._write(doc_id, "paid")
                store.plan(definition, [doc_id], [])

            with hooks.lock:
                hooks.in_claim.append(change)

        @rule()
        def expire_leases(self) -> None:
            """Every running task's lease runs out, as if its worker had paused."""
            past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
            self.db.items_tasks.update_many(
                {"status": {"$in": list(ACTIVE)}}, {"$set": {"nextRunAt": past}}
            )

        @rule(doc_ids=st.lists(DOC_IDS, min_size=1, max_size=8))
        def lose_history(self, doc_ids: list[int]) -> None:
            """Writes the stream never delivers: its reader is held while they happen,
            then its history is lost (a reconciliation may already be under way)."""
            hooks.hold_reader.set()
            if not hooks.reader_held.wait(5):
                hooks.hold_reader.clear()  # no reader right now (a leader change)
                return
            hooks.reader_held.clear()
            for doc_id in doc_ids:
                self._write(doc_id, "paid")
            hooks.lose_history = True
            hooks.release_reader.set()

        # Operators.

        @rule()
        def delete_the_lease_document(self) -> None:
            """An operator forcing a failover."""
            self.db["_mongoreact_globals"].delete_one({"_id": "leader"})

        @precondition(lambda self: RESTORES)
        @rule()
        def restore_the_globals(self) -> None:
            """The globals collection restored from the snapshot taken at the start."""
            globals_ = self.db["_mongoreact_globals"]
            globals_.delete_many({})
            for document in self.backup:
                globals_.replace_one({"_id": document["_id"]}, document, upsert=True)

        @rule()
        def drop_the_tasks_collection(self) -> None:
            self.db.items_tasks.drop()

        @rule(index=st.integers(min_value=0, max_value=2), seconds=st.integers(-120, 120))
        def step_a_clock(self, index: int, seconds: int) -> None:
            """An instance's estimate of the server's clock jumps (its host's clock
            stepped before the monotonic estimate; a failover to a primary whose clock
            differs)."""
            clock = self.engines[index % len(self.engines)].clock
            real: Callable[[], dt.datetime] = type(clock).now.__get__(clock)
            step, until = dt.timedelta(seconds=seconds), time.monotonic() + CLOCK_STEP_LASTS

            def stepped() -> dt.datetime:
                # Wrong until the estimate is corrected (its next sample).
                return real() + step if time.monotonic() < until else real()

            clock.now = stepped  # type: ignore[method-assign]

        # The invariant.

        def _final_definition(self) -> int:
            return max(self.versions[e.instance_id] for e in self.engines)

        def missing(self) -> list[str]:
            with lock:
                model = dict(self.model)
            matching = MATCHING[self._final_definition()]
            records = {r["sourceDocId"]: r for r in self.db.items_tasks.find()}
            problems = []
            for doc_id, (version, status) in sorted(model.items()):
                if status not in matching:
                    continue
                with self.handled.lock:
                    seen = version in self.handled.versions.get(doc_id, set())
                record = records.get(doc_id, {})
                if seen or (record.get("status") == "failed" and record.get("lastError")):
                    continue
                problems.append(f"{doc_id} v{version}: record {record.get('status')!r}")
            return problems

        def teardown(self) -> None:
            try:
                if self.deploying == 2:  # finish the deploy: the invariant is v2's
                    for engine in [e for e in self.engines if self.versions[e.instance_id] == 1]:
                        self._start_instance()
                        self._stop(engine)
                deadline = threading.Event()
                waited = 0.0
                while (problems := self.missing()) and waited < SETTLE_TIMEOUT:
                    deadline.wait(0.1)
                    waited += 0.1
                assert not problems, f"never handled after {SETTLE_TIMEOUT}s: {problems}"
            finally:
                hooks.release_reader.set()
                for engine in self.engines:
                    engine.stop(timeout=5)
                self.client.drop_database(self.name)
                self.client.close()
                hooks.release_reader.clear()
                hooks.in_claim.clear()
                hooks.lose_history = False

    lock = threading.Lock()  # the model is written from rules and claim hooks
    return Planning


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_last_matching_version_is_handled(mongo_uri: str, hooks: Hooks) -> None:
    run_state_machine_as_test(
        make_machine(mongo_uri, hooks),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
        ),
    )
