"""Sorted reads and duplicate ``_id`` checks answer as MongoDB does, whatever came before.

The embedded server answers sorted reads with a limit from ordered indexes it keeps
beside the collection (``mongoreact/testing/server/ordered.py``), and checks numeric
``_id``s for duplicates (1, 1.0 and Int64(1) are one key) against a set it keeps the same
way (``follow.py``), and finds the documents a query pins by equality on every field of an
index through the same ordered indexes. A hypothesis state machine interleaves every
kind of write (single and bulk inserts, updates that move a document in the order,
deletes, an ``insert_many`` that fails half-way and is rolled back, transactions that
commit or abort, alone or merged with another client's write) with sorted reads, and
checks each read against a model: the documents matching the filter, ordered by
MongoDB's BSON comparison order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

from bson.int64 import Int64
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from pymongo import MongoClient, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

Doc = dict[str, Any]

BASE = dt.datetime(2026, 1, 1)
MISSING = object()
# Values of the sort field of several BSON types, so type brackets are exercised.
VALUES = st.one_of(
    st.none(),
    st.just(MISSING),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from(["a", "b", "c"]),
    st.integers(min_value=0, max_value=6).map(lambda h: BASE + dt.timedelta(hours=h)),
)
TASKS = st.sampled_from(["t1", "t2", "t3"])
STATUSES = st.sampled_from(["pending", "processing", "completed"])
IDS = st.integers(min_value=0, max_value=24)


def bracket(value: Any) -> tuple[Any, ...]:
    """MongoDB's sort order for the values used here (null and missing alike)."""
    if value is None or value is MISSING:
        return (1,)
    if isinstance(value, int):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    return (10, value)


def document(doc_id: int, task: str, status: str, due: Any) -> Doc:
    doc: Doc = {"_id": doc_id, "task": task, "status": status}
    if due is not MISSING:
        doc["due"] = due
    return doc


class SortedReads(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = self.connect()
        self.coll = self.client[f"sorted_{uuid.uuid4().hex[:10]}"].tasks
        self.coll.create_index([("task", 1), ("due", 1)])
        self.coll.create_index([("task", 1), ("status", 1)], unique=False)
        self.model: dict[int, Doc] = {}

    def connect(self) -> MongoClient[Doc]:
        raise NotImplementedError  # the test's subclass connects to its server

    def teardown(self) -> None:
        self.client.drop_database(self.coll.database.name)

    # -- writes ---------------------------------------------------------------
    @rule(doc_id=IDS, task=TASKS, status=STATUSES, due=VALUES)
    def upsert(self, doc_id: int, task: str, status: str, due: Any) -> None:
        doc = document(doc_id, task, status, due)
        self.coll.replace_one({"_id": doc_id}, doc, upsert=True)
        self.model[doc_id] = doc

    @rule(doc_id=IDS, due=VALUES)
    def move(self, doc_id: int, due: Any) -> None:
        update = {"$unset": {"due": ""}} if due is MISSING else {"$set": {"due": due}}
        self.coll.update_one({"_id": doc_id}, update)
        if doc_id in self.model:
            self.model[doc_id] = document(
                doc_id, self.model[doc_id]["task"], self.model[doc_id]["status"], due
            )

    @rule(doc_id=IDS)
    def delete(self, doc_id: int) -> None:
        self.coll.delete_one({"_id": doc_id})
        self.model.pop(doc_id, None)

    @rule(start=st.integers(min_value=100, max_value=140), due=VALUES)
    def insert_many_failing_half_way(self, start: int, due: Any) -> None:
        docs = [document(start + i, "t1", "pending", due) for i in range(3)]
        existing = next(iter(self.model), None)
        if existing is not None:
            docs.insert(2, dict(self.model[existing]))
        with contextlib.suppress(BulkWriteError):
            self.coll.insert_many(docs)
        for doc in docs:  # an ordered insert stops at the first duplicate
            if doc["_id"] in self.model:
                break
            self.model[doc["_id"]] = doc

    @rule(
        doc_id=IDS,
        due=VALUES,
        commit=st.booleans(),
        meanwhile=st.none() | IDS,
        other_due=VALUES,
        delete=st.none() | IDS,
    )
    def transaction(
        self,
        doc_id: int,
        due: Any,
        commit: bool,
        meanwhile: int | None,
        other_due: Any,
        delete: int | None,
    ) -> None:
        """A transaction replacing (and maybe deleting) documents while another client
        maybe writes one: its commit then merges into the live collection, or conflicts
        if that write hit a document it wrote."""
        doc = document(doc_id, "t2", "pending", due)
        written = {doc_id} if delete not in self.model else {doc_id, delete}
        with self.client.start_session() as session:
            session.start_transaction()
            self.coll.replace_one({"_id": doc_id}, doc, upsert=True, session=session)
            if delete is not None and delete != doc_id:
                self.coll.delete_one({"_id": delete}, session=session)
            if meanwhile is not None:
                other = document(meanwhile, "t1", "pending", other_due)
                self.coll.replace_one({"_id": meanwhile}, other, upsert=True)
                self.model[meanwhile] = other
            if not commit:
                session.abort_transaction()
                return
            try:
                session.commit_transaction()
            except OperationFailure as conflict:
                assert conflict.code == 112 and meanwhile in written
                return
            assert meanwhile not in written
            if delete in written and delete != doc_id:
                del self.model[delete]
            self.model[doc_id] = doc

    @rule(data=st.data(), kind=st.sampled_from([float, Int64, int]))
    def insert_numeric(self, data: st.DataObject, kind: type) -> None:
        stored = sorted(self.model)
        doc_id = data.draw(st.sampled_from(stored) if stored else IDS)  # mostly duplicates
        doc = document(doc_id, "t3", "pending", None)
        try:
            self.coll.insert_one({**doc, "_id": kind(doc_id)})
        except DuplicateKeyError:
            assert doc_id in self.model
        else:
            assert doc_id not in self.model
            self.model[doc_id] = doc

    # -- reads ----------------------------------------------------------------
    @rule(
        tasks=st.lists(TASKS, min_size=1, max_size=3, unique=True),
        hours=st.integers(min_value=0, max_value=6),
    )
    def claim(self, tasks: list[str], hours: int) -> None:
        now = BASE + dt.timedelta(hours=hours)
        claimed = self.coll.find_one_and_update(
            {"task": {"$in": tasks}, "due": {"$lte": now}, "status": "pending"},
            {"$set": {"status": "processing"}},
            sort=[("due", 1)],
            return_document=ReturnDocument.BEFORE,
        )
        due = [
            d
            for d in self.model.values()
            if d["task"] in tasks
            and d["status"] == "pending"
            and isinstance(d.get("due"), dt.datetime)
            and d["due"] <= now
        ]
        if not due:
            assert claimed is None
            return
        assert claimed is not None
        assert claimed in due
        assert claimed["due"] == min(d["due"] for d in due)
        self.model[claimed["_id"]]["status"] = "processing"

    @rule(
        task=TASKS,
        direction=st.sampled_from([1, -1]),
        limit=st.integers(min_value=1, max_value=30),
        low=st.one_of(st.none(), VALUES.filter(lambda v: v is not None and v is not MISSING)),
    )
    def page(self, task: str, direction: int, limit: int, low: Any) -> None:
        query: Doc = {"task": task}
        if low is not None:
            query["due"] = {"$gt": low}
        got = list(self.coll.find(query).sort("due", direction).limit(limit))
        matching = [
            d
            for d in self.model.values()
            if d["task"] == task
            and (low is None or (bracket(d.get("due", MISSING))[0] == bracket(low)[0]
                                 and bracket(d.get("due", MISSING)) > bracket(low)))
        ]  # fmt: skip
        expected = sorted(
            (bracket(d.get("due", MISSING)) for d in matching), reverse=direction == -1
        )[:limit]
        assert [bracket(d.get("due", MISSING)) for d in got] == expected
        assert all(d in matching for d in got)

    @rule(
        tasks=st.lists(TASKS, min_size=1, max_size=3, unique=True),
        statuses=st.lists(STATUSES, min_size=1, max_size=2, unique=True),
    )
    def lookup(self, tasks: list[str], statuses: list[str]) -> None:
        query = {"task": {"$in": tasks}, "status": {"$in": statuses}}
        got = sorted(d["_id"] for d in self.coll.find(query))
        expected = sorted(
            i for i, d in self.model.items() if d["task"] in tasks and d["status"] in statuses
        )
        assert got == expected

    @rule(after=st.one_of(st.none(), IDS), limit=st.integers(min_value=1, max_value=30))
    def keyset(self, after: int | None, limit: int) -> None:
        query = {} if after is None else {"_id": {"$gt": after}}
        got = [d["_id"] for d in self.coll.find(query, {"_id": 1}).sort("_id", 1).limit(limit)]
        expected = sorted(i for i in self.model if after is None or i > after)[:limit]
        assert got == expected

    @invariant()
    def same_documents(self) -> None:
        assert {d["_id"]: d for d in self.coll.find()} == self.model


def test_indexes_follow_every_write(mongo_client: MongoClient[Doc]) -> None:
    class OnServer(SortedReads):
        def connect(self) -> MongoClient[Doc]:
            return mongo_client

    run_state_machine_as_test(
        OnServer,
        settings=settings(max_examples=40, stateful_step_count=40),
    )


def test_sorted_reads_over_arrays_sort_by_their_least_or_greatest_element(
    mongo_client: MongoClient[Doc],
) -> None:
    coll = mongo_client[f"sorted_{uuid.uuid4().hex[:10]}"].tasks
    coll.create_index([("task", 1), ("due", 1)])
    coll.insert_many(
        [
            {"_id": 1, "task": "a", "due": 5},
            {"_id": 2, "task": "a", "due": [1, 9]},
            {"_id": 3, "task": "a", "due": 3},
            {"_id": 4, "task": "b", "due": 0},
        ]
    )
    ascending = coll.find({"task": "a"}).sort("due", 1).limit(2)
    assert [d["_id"] for d in ascending] == [2, 3]
    descending = coll.find({"task": "a"}).sort("due", -1).limit(2)
    assert [d["_id"] for d in descending] == [2, 1]
    coll.delete_one({"_id": 2})
    assert [d["_id"] for d in coll.find({"task": "a"}).sort("due", 1).limit(2)] == [3, 1]
    mongo_client.drop_database(coll.database.name)


def test_reads_of_large_collections_return_every_match_once(
    mongo_client: MongoClient[Doc],
) -> None:
    # Larger than the embedded server's scan chunk (2 000): it reads in several scans.
    coll = mongo_client[f"scan_{uuid.uuid4().hex[:10]}"].items
    coll.insert_many([{"_id": i, "k": i % 3, "pad": "x" * 20} for i in range(5_000)])
    matching = sorted(d["_id"] for d in coll.find({"k": 1}, {"_id": 1}))
    assert matching == [i for i in range(5_000) if i % 3 == 1]
    assert len(list(coll.find({"k": {"$ne": 2}}).limit(2_500))) == 2_500
    assert len({d["_id"] for d in coll.find({}, {"_id": 1}).batch_size(700)}) == 5_000
    result = coll.update_many({"k": 0}, {"$set": {"seen": True}})
    assert result.matched_count == result.modified_count == len(range(0, 5_000, 3))
    assert coll.delete_many({"seen": True}).deleted_count == len(range(0, 5_000, 3))
    assert coll.count_documents({}) == 5_000 - len(range(0, 5_000, 3))
    mongo_client.drop_database(coll.database.name)
