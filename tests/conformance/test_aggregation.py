"""Aggregation stages mongoreact relies on, including $merge on a compound key."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

Doc = dict[str, Any]


def test_lookup_with_local_and_foreign_fields(db: Database[Doc]) -> None:
    db.orders.insert_many([{"_id": 1, "user": "a"}, {"_id": 2, "user": "z"}])
    db.users.insert_one({"_id": "a", "name": "Ann"})
    result = list(
        db.orders.aggregate(
            [
                {
                    "$lookup": {
                        "from": "users",
                        "localField": "user",
                        "foreignField": "_id",
                        "as": "u",
                    }
                },
                {"$sort": {"_id": 1}},
            ]
        )
    )
    assert [len(r["u"]) for r in result] == [1, 0]


def test_lookup_with_a_pipeline_and_let(db: Database[Doc]) -> None:
    db.tasks.insert_many([{"_id": 1, "src": 10}, {"_id": 2, "src": 20}])
    db.src.insert_one({"_id": 10, "ok": True})
    result = list(
        db.tasks.aggregate(
            [
                {
                    "$lookup": {
                        "from": "src",
                        "let": {"s": "$src"},
                        "pipeline": [
                            {"$match": {"$expr": {"$eq": ["$_id", "$$s"]}}},
                            {"$count": "n"},
                        ],
                        "as": "found",
                    }
                },
                {"$match": {"found.0": {"$exists": False}}},
                {"$project": {"_id": 1}},
            ]
        )
    )
    assert result == [{"_id": 2}]


def test_group_sort_limit_skip_facet_and_count(db: Database[Doc]) -> None:
    db.t.insert_many(
        [{"task": t, "status": s} for t in ("a", "b") for s in ("pending", "failed", "pending")]
    )
    grouped = list(
        db.t.aggregate(
            [
                {"$group": {"_id": {"task": "$task", "status": "$status"}, "n": {"$sum": 1}}},
                {"$sort": {"_id.task": 1, "_id.status": 1}},
                {"$skip": 1},
                {"$limit": 2},
            ]
        )
    )
    assert [(g["_id"]["task"], g["_id"]["status"], g["n"]) for g in grouped] == [
        ("a", "pending", 2),
        ("b", "failed", 1),
    ]
    (facets,) = db.t.aggregate(
        [
            {
                "$facet": {
                    "total": [{"$count": "n"}],
                    "failed": [{"$match": {"status": "failed"}}, {"$count": "n"}],
                }
            }
        ]
    )
    assert facets == {"total": [{"n": 6}], "failed": [{"n": 2}]}


_PLAN_MERGE: Doc = {
    "$merge": {
        "into": "source_tasks",
        "on": ["task", "sourceDocId"],
        "whenMatched": [
            {"$set": {"changed": {"$ne": ["$observed", "$$new.observed"]}}},
            {
                "$set": {
                    "status": {"$cond": ["$changed", "pending", "$status"]},
                    "observed": "$$new.observed",
                    "runs": {"$cond": ["$changed", {"$add": ["$runs", 1]}, "$runs"]},
                }
            },
            {"$unset": "changed"},
        ],
        "whenNotMatched": "insert",
    }
}


def _plan(db: Database[Doc]) -> None:
    db.source.aggregate(
        [
            {
                "$project": {
                    "_id": 0,
                    "task": {"$literal": "t"},
                    "sourceDocId": "$_id",
                    "observed": {"v": "$v"},
                    "status": {"$literal": "pending"},
                    "runs": {"$literal": 1},
                }
            },
            _PLAN_MERGE,
        ]
    )


def test_merge_on_a_compound_unique_key_with_a_when_matched_pipeline(
    db: Database[Doc],
) -> None:
    db.source_tasks.create_index([("task", 1), ("sourceDocId", 1)], unique=True)
    db.source.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}])
    _plan(db)
    db.source_tasks.update_many({}, {"$set": {"status": "completed"}})
    db.source.update_one({"_id": 2}, {"$set": {"v": 3}})
    _plan(db)
    records = {r["sourceDocId"]: r for r in db.source_tasks.find()}
    assert len(records) == 2
    assert records[1]["status"] == "completed" and records[1]["runs"] == 1
    assert records[2]["status"] == "pending" and records[2]["runs"] == 2
    assert records[2]["observed"] == {"v": 3}


def test_merge_matches_targets_by_bson_equality_and_its_own_earlier_output(
    db: Database[Doc],
) -> None:
    db.source_tasks.create_index([("task", 1), ("sourceDocId", 1)], unique=True)
    # A record keyed by the double 1.0 is the source document with the int _id 1.
    db.source_tasks.insert_one(
        {"task": "t", "sourceDocId": 1.0, "observed": {"v": 1}, "status": "completed", "runs": 1}
    )
    db.source.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}])
    _plan(db)
    assert sorted(r["sourceDocId"] for r in db.source_tasks.find()) == [1, 2]
    assert db.source_tasks.find_one({"sourceDocId": 1})["status"] == "completed"  # type: ignore[index]
    # Two output documents with one key: the second merges into the first's insert.
    db.pairs.insert_many([{"_id": "a", "k": 7}, {"_id": "b", "k": 7}])
    db.pairs.aggregate(
        [
            {
                "$project": {
                    "_id": 0, "task": {"$literal": "u"}, "sourceDocId": "$k",
                    "observed": {"v": "$_id"}, "status": {"$literal": "pending"},
                    "runs": {"$literal": 1},
                }
            },
            _PLAN_MERGE,
        ]
    )  # fmt: skip
    assert db.source_tasks.count_documents({"task": "u"}) == 1


def test_merge_on_fields_without_a_unique_index_is_refused(db: Database[Doc]) -> None:
    db.source.insert_one({"_id": 1, "v": 1})
    with pytest.raises(OperationFailure) as error:
        _plan(db)
    assert error.value.code == 51183


def test_expression_operators_the_task_engine_uses(db: Database[Doc]) -> None:
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    db.c.insert_one({"_id": 1, "a": 0, "s": "", "d": when, "h": [1, 2, 3]})
    (result,) = db.c.aggregate(
        [
            {
                "$project": {
                    "_id": 0,
                    "not_zero": {"$not": ["$a"]},
                    "not_empty_string": {"$not": ["$s"]},
                    "not_missing": {"$not": ["$nope"]},
                    "earliest": {"$min": ["$d", {"$add": ["$d", 1000]}]},
                    "latest": {"$max": ["$d", {"$add": ["$d", -1000]}]},
                    "member": {"$in": ["$a", {"$literal": [0, "$x"]}]},
                    "last_two": {"$slice": [{"$concatArrays": ["$h", [4]]}, -2]},
                    "fallback": {"$ifNull": ["$nope", "$a"]},
                }
            }
        ]
    )
    naive = when.replace(tzinfo=None)
    assert result == {
        "not_zero": True,
        "not_empty_string": False,
        "not_missing": True,
        "earliest": naive,
        "latest": naive,
        "member": True,
        "last_two": [3, 4],
        "fallback": 0,
    }


def test_merge_when_matched_fail_reports_the_colliding_key(db: Database[Doc]) -> None:
    db.source.insert_one({"_id": 1, "k": "a"})
    db.target.create_index("k", unique=True)
    db.target.insert_one({"_id": 9, "k": "a"})
    with pytest.raises(OperationFailure) as collided:
        db.source.aggregate(
            [{"$project": {"_id": 0, "k": 1}},
             {"$merge": {"into": "target", "on": "k", "whenMatched": "fail"}}]
        )  # fmt: skip
    assert collided.value.code == 11000
    details = collided.value.details or {}
    assert details.get("keyPattern") == {"k": 1} and details.get("keyValue") == {"k": "a"}


@pytest.mark.once
@pytest.mark.timeout(300)
def test_count_and_group_over_more_than_50_000_documents(db: Database[Doc]) -> None:
    # mongoeco refuses to materialize more than 50 000 documents by default; MongoDB
    # groups and counts any number (spilling to disk when needed).
    db.big.insert_many([{"g": i % 3} for i in range(50_001)])
    assert db.big.count_documents({}) == 50_001
    counts = sorted(d["n"] for d in db.big.aggregate([{"$group": {"_id": "$g", "n": {"$sum": 1}}}]))
    assert counts == [16_667, 16_667, 16_667]


def test_out_replaces_the_target_keeping_its_indexes(db: Database[Doc]) -> None:
    db.source.insert_many([{"_id": 1, "x": 1}, {"_id": 2, "x": 2}])
    db.target.create_index("x")
    db.target.insert_one({"_id": 99})
    assert list(db.source.aggregate([{"$match": {"x": {"$gte": 1}}}, {"$out": "target"}])) == []
    assert list(db.target.find(sort=[("_id", 1)])) == [{"_id": 1, "x": 1}, {"_id": 2, "x": 2}]
    assert {index["name"] for index in db.target.list_indexes()} == {"_id_", "x_1"}
    # A failing $out (a duplicate _id in its output) leaves the target as it was.
    with pytest.raises(OperationFailure) as duplicate:
        db.source.aggregate([{"$set": {"_id": 1}}, {"$out": "target"}])
    assert duplicate.value.code == 11000
    assert db.target.count_documents({}) == 2
    assert sorted(db.list_collection_names()) == ["source", "target"]
    # $out into another database.
    other = db.client[db.name + "_out"]
    try:
        db.source.aggregate([{"$out": {"db": other.name, "coll": "copy"}}])
        assert other.copy.count_documents({}) == 2
    finally:
        db.client.drop_database(other.name)


def test_database_level_aggregates(db: Database[Doc]) -> None:
    produced = list(db.aggregate([{"$documents": [{"i": i} for i in range(150)]}]))
    assert [d["i"] for d in produced] == list(range(150))  # past the first batch
    db.t.insert_one({"_id": 2, "x": 0})
    with pytest.raises(OperationFailure) as duplicate:
        db.aggregate(
            [{"$documents": [{"_id": 2, "x": 1}]}, {"$merge": {"into": "t", "whenMatched": "fail"}}]
        )
    assert duplicate.value.code == 11000
    assert duplicate.value.details is not None
    assert duplicate.value.details["keyValue"] == {"_id": 2}
    with db.client.start_session() as session:
        db.t.find_one(session=session)  # the server has seen this session
        listed = list(db.aggregate([{"$listLocalSessions": {}}]))
        assert session.session_id["id"] in [entry["_id"]["id"] for entry in listed]


def test_views_read_through_their_pipeline_and_refuse_writes(db: Database[Doc]) -> None:
    db.base.insert_many([{"_id": i, "tags": [i, i + 1]} for i in range(1, 151)])
    db.create_collection("above", viewOn="base", pipeline=[{"$match": {"_id": {"$gt": 1}}}])
    db.create_collection("few", viewOn="above", pipeline=[{"$match": {"_id": {"$lt": 5}}}])
    kinds = {c["name"]: c["type"] for c in db.list_collections()}
    assert kinds == {"base": "collection", "above": "view", "few": "view"}
    assert len(list(db.above.find())) == 149  # past the first batch
    assert list(db.few.find({}, {"tags": 0}, sort=[("_id", -1)], limit=2)) == [
        {"_id": 4},
        {"_id": 3},
    ]
    assert db.above.count_documents({}) == 149
    assert db.above.estimated_document_count() == 149
    assert list(db.few.aggregate([{"$count": "n"}])) == [{"n": 3}]
    assert sorted(db.few.distinct("tags")) == [2, 3, 4, 5]
    with pytest.raises(OperationFailure) as write:
        db.above.insert_one({"_id": 999})
    assert write.value.code == 166  # CommandNotSupportedOnView
    db.few.drop()
    assert sorted(db.list_collection_names()) == ["above", "base"]
