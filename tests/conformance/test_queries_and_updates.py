"""Queries, updates, indexes and bulk writes mongoreact relies on."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from bson import Int64, ObjectId
from pymongo import ASCENDING, DeleteOne, InsertOne, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

Doc = dict[str, Any]


def test_find_one_and_update_claims_by_sort_and_returns_the_new_document(
    db: Database[Doc],
) -> None:
    db.t.insert_many([{"_id": i, "status": "pending", "due": 10 - i} for i in range(5)])
    claimed = db.t.find_one_and_update(
        {"status": "pending"},
        {"$set": {"status": "processing"}, "$inc": {"attempts": 1}},
        sort=[("due", ASCENDING)],
        return_document=ReturnDocument.AFTER,
    )
    assert claimed == {"_id": 4, "status": "processing", "due": 6, "attempts": 1}
    before = db.t.find_one_and_update(
        {"status": "pending"},
        {"$set": {"status": "x"}},
        sort=[("due", ASCENDING)],
        return_document=ReturnDocument.BEFORE,
    )
    assert before is not None and before["status"] == "pending"


def test_find_one_and_update_with_a_pipeline_and_upsert_elects_a_leader(
    db: Database[Doc],
) -> None:
    def elect(me: str) -> Doc | None:
        return db.meta.find_one_and_update(
            {"_id": "lease"},
            [
                {
                    "$set": {
                        "lock": {
                            "$cond": {
                                "if": {
                                    "$or": [
                                        {"$lt": [{"$ifNull": ["$lock.expiresAt", None]}, "$$NOW"]},
                                        {"$eq": ["$lock.owner", me]},
                                    ]
                                },
                                "then": {"owner": me, "expiresAt": {"$add": ["$$NOW", 30_000]}},
                                "else": "$lock",
                            }
                        }
                    }
                }
            ],
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    first = elect("a")
    assert first is not None and first["lock"]["owner"] == "a"
    second = elect("b")
    assert second is not None and second["lock"]["owner"] == "a"
    assert isinstance(first["lock"]["expiresAt"], datetime.datetime)


def test_update_pipelines_with_cond_now_and_if_null(db: Database[Doc]) -> None:
    db.t.insert_one({"_id": 1, "status": "processing", "n": None})
    db.t.update_one(
        {"_id": 1},
        [
            {
                "$set": {
                    "status": {
                        "$cond": [{"$eq": ["$status", "processing"]}, "completed", "$status"]
                    },
                    "doneAt": "$$NOW",
                    "n": {"$add": [{"$ifNull": ["$n", 0]}, 1]},
                    "history": {
                        "$slice": [{"$concatArrays": [{"$ifNull": ["$history", []]}, ["x"]]}, -5]
                    },
                }
            }
        ],
    )
    doc = db.t.find_one({"_id": 1})
    assert doc is not None
    assert doc["status"] == "completed" and doc["n"] == 1 and doc["history"] == ["x"]
    age = datetime.datetime.now(datetime.timezone.utc) - doc["doneAt"].replace(
        tzinfo=datetime.timezone.utc
    )
    assert abs(age.total_seconds()) < 60


def test_expr_queries_can_use_now(db: Database[Doc]) -> None:
    past = datetime.datetime(2000, 1, 1)
    future = datetime.datetime(2999, 1, 1)
    db.t.insert_many([{"_id": 1, "due": past}, {"_id": 2, "due": future}])
    due = list(db.t.find({"$expr": {"$lte": ["$due", "$$NOW"]}}))
    assert [d["_id"] for d in due] == [1]


def test_update_operators(db: Database[Doc]) -> None:
    db.t.update_one(
        {"_id": 1},
        {
            "$setOnInsert": {"created": True},
            "$push": {"log": {"$each": [1, 2, 3], "$slice": -2}},
            "$currentDate": {"touched": True},
            "$inc": {"n": 2},
        },
        upsert=True,
    )
    db.t.update_one({"_id": 1}, {"$setOnInsert": {"created": False}, "$inc": {"n": 1}}, upsert=True)
    doc = db.t.find_one({"_id": 1})
    assert doc is not None
    assert doc["created"] is True and doc["log"] == [2, 3] and doc["n"] == 3
    assert isinstance(doc["touched"], datetime.datetime)


def test_find_with_projection_sort_skip_limit(db: Database[Doc]) -> None:
    db.t.insert_many([{"_id": i, "n": {"x": i, "y": -i}} for i in range(10)])
    found = list(db.t.find({"_id": {"$gte": 2}}, {"n.x": 1}).sort("_id", -1).skip(1).limit(3))
    assert found == [
        {"_id": 8, "n": {"x": 8}},
        {"_id": 7, "n": {"x": 7}},
        {"_id": 6, "n": {"x": 6}},
    ]


def test_unique_index_rejects_duplicates_with_code_11000(db: Database[Doc]) -> None:
    db.t.create_index([("task", 1), ("sourceDocId", 1)], unique=True)
    db.t.insert_one({"task": "a", "sourceDocId": 1})
    with pytest.raises(DuplicateKeyError) as error:
        db.t.insert_one({"task": "a", "sourceDocId": 1})
    assert error.value.code == 11000
    db.t.insert_one({"task": "b", "sourceDocId": 1})


def test_partial_indexes_are_created_and_enforced(db: Database[Doc]) -> None:
    db.t.create_index(
        [("task", 1), ("nextRunAt", 1)],
        name="polling_idx",
        partialFilterExpression={"nextRunAt": {"$type": "date"}},
    )
    db.t.create_index("key", unique=True, partialFilterExpression={"live": True})
    info = db.t.index_information()
    assert info["polling_idx"]["partialFilterExpression"] == {"nextRunAt": {"$type": "date"}}
    db.t.insert_many([{"key": 1, "live": False}, {"key": 1, "live": False}])
    db.t.insert_one({"key": 1, "live": True})
    with pytest.raises(DuplicateKeyError):
        db.t.insert_one({"key": 1, "live": True})


def test_ttl_indexes_can_be_created(db: Database[Doc]) -> None:
    db.t.create_index("expiresAt", expireAfterSeconds=0)
    assert db.t.index_information()["expiresAt_1"]["expireAfterSeconds"] == 0


def test_bulk_writes_ordered_and_unordered_with_upserts(db: Database[Doc]) -> None:
    result = db.t.bulk_write(
        [
            UpdateOne({"_id": 1}, {"$set": {"v": 1}}, upsert=True),
            UpdateOne({"_id": 2}, {"$set": {"v": 2}}, upsert=True),
            InsertOne({"_id": 3}),
            DeleteOne({"_id": 3}),
        ]
    )
    assert result.upserted_count == 2 and result.inserted_count == 1
    assert result.deleted_count == 1
    with pytest.raises(BulkWriteError) as ordered:
        db.t.bulk_write([InsertOne({"_id": 1}), InsertOne({"_id": 10})])
    assert ordered.value.details["nInserted"] == 0
    with pytest.raises(BulkWriteError) as unordered:
        db.t.bulk_write([InsertOne({"_id": 1}), InsertOne({"_id": 11})], ordered=False)
    assert unordered.value.details["nInserted"] == 1
    assert unordered.value.details["writeErrors"][0]["code"] == 11000


def test_large_write_batches_report_write_errors_at_the_right_index(db: Database[Doc]) -> None:
    db.t.insert_one({"_id": 150})
    with pytest.raises(BulkWriteError) as error:
        db.t.insert_many([{"_id": i} for i in range(300)], ordered=False)
    details = error.value.details
    assert details["nInserted"] == 299
    assert [e["index"] for e in details["writeErrors"]] == [150]


def test_a_compound_unique_index_is_enforced_on_inserts_and_updates(db: Database[Doc]) -> None:
    db.c.create_index([("task", 1), ("source", 1)], unique=True)
    db.c.insert_one({"_id": "a", "task": "t", "source": 1})
    db.c.insert_one({"_id": "b", "task": "t", "source": 2})
    db.c.insert_one({"_id": "c", "task": "u", "source": 1})
    for duplicate in ({"task": "t", "source": 1}, {"task": "t", "source": 1.0}):
        with pytest.raises(DuplicateKeyError):
            db.c.insert_one(duplicate)
    with pytest.raises(DuplicateKeyError):
        db.c.update_one({"_id": "b"}, {"$set": {"source": 1}})
    # Rewriting a document's own key, or other fields, is no conflict.
    db.c.update_one({"_id": "a"}, {"$set": {"source": 1, "note": "x"}})
    db.c.update_one({"_id": "b"}, {"$set": {"source": 3}})
    db.c.insert_one({"task": "t", "source": 2})  # freed by the update above
    assert db.c.count_documents({}) == 4


def test_long_in_lists_on_id_match_by_bson_equality(db: Database[Doc]) -> None:
    # How the planner and the reconciler fetch a batch; the embedded server answers
    # these by lookup, so its results must equal a scan's.
    oids = [ObjectId() for _ in range(40)]
    docs: list[Doc] = [{"_id": oid, "n": i} for i, oid in enumerate(oids)]
    docs += [{"_id": f"s{i}", "n": i} for i in range(20)]
    docs += [{"_id": 7, "n": 0}, {"_id": 8.0, "n": 1}, {"_id": {"a": 1}, "n": 2}]
    db.c.insert_many(docs)
    wanted: list[Any] = [*oids[::2], "s3", "s4", "missing", ObjectId(), 7.0, 8, {"a": 1}]
    found = [d["_id"] for d in db.c.find({"_id": {"$in": wanted}})]
    assert sorted(map(str, found)) == sorted(map(str, [*oids[::2], "s3", "s4", 7, 8.0, {"a": 1}]))
    # Combined with another condition, through aggregate, with a limit, in updates.
    assert db.c.count_documents({"_id": {"$in": wanted}, "n": {"$lt": 10}}) == 10
    pipeline: list[Doc] = [{"$match": {"_id": {"$in": wanted}}}, {"$count": "n"}]
    assert list(db.c.aggregate(pipeline)) == [{"n": 25}]
    assert len(list(db.c.find({"_id": {"$in": wanted}}).limit(3))) == 3
    assert db.c.update_many({"_id": {"$in": wanted}}, {"$set": {"hit": True}}).modified_count == 25
    assert db.c.count_documents({"_id": {"$nin": wanted}}) == len(docs) - 25
    assert db.c.find_one({"_id": "absent"}) is None


def test_long_in_lists_keep_regex_and_null_semantics(db: Database[Doc]) -> None:
    db.c.insert_many([{"_id": 1, "k": "apple"}, {"_id": 2}, {"_id": 3, "k": "pear"}])
    values: list[Any] = [f"v{i}" for i in range(30)]
    assert [d["_id"] for d in db.c.find({"k": {"$in": [*values, re.compile("^ap")]}})] == [1]
    assert [d["_id"] for d in db.c.find({"k": {"$in": [*values, None]}})] == [2]
    assert [d["_id"] for d in db.c.find({"k": {"$nin": [*values, None]}})] == [1, 3]


def test_comparisons_match_only_values_of_the_query_values_type(db: Database[Doc]) -> None:
    now = datetime.datetime(2026, 1, 1)
    db.c.insert_many(
        [
            {"_id": "null", "v": None, "sub": {"v": None}},
            {"_id": "missing", "sub": {}},
            {"_id": "int", "v": 5, "sub": {"v": 5}},
            {"_id": "string", "v": "x", "sub": {"v": "x"}},
            {"_id": "date", "v": now, "sub": {"v": now}},
            {"_id": "array", "v": [1, "x"], "sub": {"v": [1, "x"]}},
        ]
    )

    def ids(query: Doc) -> list[str]:
        return sorted(d["_id"] for d in db.c.find(query))

    for path in ("v", "sub.v"):
        assert ids({path: {"$lte": now}}) == ["date"]
        assert ids({path: {"$gt": 3}}) == ["int"]
        assert ids({path: {"$lt": 3}}) == ["array"]
        assert ids({path: {"$gte": "a"}}) == ["array", "string"]
        assert ids({path: {"$not": {"$gt": 3}}}) == ["array", "date", "missing", "null", "string"]
    # Aggregation expressions do compare across types, by the BSON sort order.
    assert ids({"$expr": {"$lt": ["$v", 0]}}) == ["missing", "null"]


def test_let_values_are_expressions_evaluated_once(db: Database[Doc]) -> None:
    db.t.insert_many([{"_id": 1}, {"_id": 2}])
    let = {"id": 1, "y": {"$literal": "$bar"}, "rand": {"$rand": {}}}
    found = list(
        db.t.aggregate(
            [
                {"$match": {"$expr": {"$eq": ["$_id", "$$id"]}}},
                {"$project": {"_id": 0, "y": "$$y", "rand": "$$rand"}},
            ],
            let=let,
        )
    )
    assert len(found) == 1 and found[0]["y"] == "$bar"
    assert isinstance(found[0]["rand"], float)
    db.t.update_many({}, [{"$set": {"y": "$$y"}}], let={"y": {"$literal": "$bar"}})
    assert {d["y"] for d in db.t.find()} == {"$bar"}


def test_an_id_with_a_dollar_prefixed_field_is_refused(db: Database[Doc]) -> None:
    with pytest.raises(OperationFailure):
        db.t.insert_one({"_id": {"$a": 1}})
    db.t.insert_one({"_id": 1, "sub": {"$a": 1}})  # allowed outside _id (5.0+)
    assert db.t.count_documents({}) == 1


def test_english_locale_collations(db: Database[Doc]) -> None:
    db.t.insert_many([{"_id": 1, "x": "ping"}, {"_id": 2, "x": "Pong"}])
    insensitive = {"locale": "en_US", "strength": 2}
    assert list(db.t.find({"x": "PING"}, collation=insensitive)) == [{"_id": 1, "x": "ping"}]
    assert db.t.count_documents({"x": "PONG"}, collation=insensitive) == 1
    db.t.update_many({"x": "PONG"}, {"$set": {"y": 1}}, collation=insensitive)
    assert db.t.find_one({"_id": 2}) == {"_id": 2, "x": "Pong", "y": 1}
    db.t.delete_one({"x": "PING"}, collation={"locale": "en_GB", "strength": 1})
    assert [d["_id"] for d in db.t.find()] == [2]


def test_reads_by_numeric_id_follow_bson_equality(db: Database[Doc]) -> None:
    """1, 1.0 and Int64(1) are one _id value (reads of integer ids were served by a
    scan on the embedded server; they are lookups now, and must stay exact)."""
    db.items.insert_many([{"_id": 1, "v": "int"}, {"_id": 2.5, "v": "double"},
                          {"_id": Int64(3), "v": "long"}, {"_id": "1", "v": "string"}])  # fmt: skip
    assert db.items.find_one({"_id": 1.0})["v"] == "int"  # type: ignore[index]
    assert db.items.find_one({"_id": Int64(1)})["v"] == "int"  # type: ignore[index]
    assert db.items.find_one({"_id": 3})["v"] == "long"  # type: ignore[index]
    assert db.items.find_one({"_id": 2}) is None
    found = db.items.find({"_id": {"$in": [1.0, 3.0, "1", 7]}}).sort("v", 1)
    assert [d["v"] for d in found] == ["int", "long", "string"]
    db.items.delete_one({"_id": 1.0})
    assert db.items.find_one({"_id": 1}) is None
    db.items.insert_one({"_id": 1.0, "v": "double again"})
    assert db.items.find_one({"_id": Int64(1)})["v"] == "double again"  # type: ignore[index]
    with pytest.raises(DuplicateKeyError):
        db.items.insert_one({"_id": 1, "v": "duplicate"})
