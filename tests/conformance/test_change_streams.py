"""Change stream events: scopes, fields, filters and every write path."""

from __future__ import annotations

import datetime
import threading
from typing import Any

from bson import Int64, ObjectId, Timestamp
from pymongo import DeleteMany, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.change_stream import ChangeStream
from pymongo.database import Database

from .conftest import assert_no_more, collect, connect

Doc = dict[str, Any]


def test_collection_stream_sees_the_first_write_after_watch(db: Database[Doc]) -> None:
    with db.users.watch(max_await_time_ms=200) as stream:
        db.users.insert_one({"_id": 1})
        db.users.insert_one({"_id": 2})
        events = collect(stream, 2)
    assert [e["documentKey"]["_id"] for e in events] == [1, 2]


def test_collection_stream_on_a_collection_that_does_not_exist_yet(db: Database[Doc]) -> None:
    assert "later" not in db.list_collection_names()
    with db.later.watch(max_await_time_ms=200) as stream:
        db.later.insert_one({"_id": "a"})
        (event,) = collect(stream, 1)
    assert event["operationType"] == "insert"
    assert event["ns"] == {"db": db.name, "coll": "later"}


def test_database_stream_sees_every_collection_of_its_database(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    other = mongo_client[db.name + "_other"]
    with db.watch(max_await_time_ms=200) as stream:
        db.a.insert_one({"_id": 1})
        other.a.insert_one({"_id": 99})
        db.b.insert_one({"_id": 2})
        events = collect(stream, 2)
        assert_no_more(stream)
    mongo_client.drop_database(other.name)
    assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in events] == [("a", 1), ("b", 2)]


def test_cluster_stream_sees_every_database(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    other = mongo_client[db.name + "_x"]
    pipeline = [{"$match": {"ns.db": {"$in": [db.name, other.name]}}}]
    with mongo_client.watch(pipeline, max_await_time_ms=200) as stream:
        db.a.insert_one({"_id": 1})
        other.b.insert_one({"_id": 2})
        events = collect(stream, 2)
    mongo_client.drop_database(other.name)
    assert [e["ns"]["db"] for e in events] == [db.name, other.name]


def test_match_on_operation_type_and_namespace(db: Database[Doc]) -> None:
    pipeline = [{"$match": {"operationType": {"$in": ["insert", "delete"]}, "ns.coll": "keep"}}]
    with db.watch(pipeline, max_await_time_ms=200) as stream:
        db.keep.insert_one({"_id": 1})
        db.keep.update_one({"_id": 1}, {"$set": {"x": 1}})
        db.skip.insert_one({"_id": 2})
        db.keep.delete_one({"_id": 1})
        events = collect(stream, 2)
        assert_no_more(stream)
    assert [e["operationType"] for e in events] == ["insert", "delete"]


def test_match_with_expr_on_the_looked_up_document_then_project_it_away(
    db: Database[Doc],
) -> None:
    # The planner pattern: filter on fullDocument server-side, ship only ids.
    pipeline: list[Doc] = [
        {
            "$match": {
                "$or": [
                    {"ns.coll": "orders", "$expr": {"$eq": ["$fullDocument.status", "paid"]}},
                    {"operationType": "delete"},
                ]
            }
        },
        {"$project": {"_id": 1, "operationType": 1, "ns": 1, "documentKey": 1, "clusterTime": 1}},
    ]
    with db.watch(pipeline, full_document="updateLookup", max_await_time_ms=200) as stream:
        db.orders.insert_one({"_id": 1, "status": "new"})
        db.orders.insert_one({"_id": 2, "status": "paid"})
        db.orders.update_one({"_id": 1}, {"$set": {"status": "paid"}})
        db.orders.delete_one({"_id": 2})
        events = collect(stream, 3)
        assert_no_more(stream)
    assert [(e["operationType"], e["documentKey"]["_id"]) for e in events] == [
        ("insert", 2),
        ("update", 1),
        ("delete", 2),
    ]
    assert all(
        set(e) == {"_id", "operationType", "ns", "documentKey", "clusterTime"} for e in events
    )


def test_event_fields(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.insert_one({"_id": 1, "v": 1})
        (event,) = collect(stream, 1)
    assert isinstance(event["_id"]["_data"], str)
    assert isinstance(event["clusterTime"], Timestamp)
    assert isinstance(event["wallTime"], datetime.datetime)
    assert event["ns"] == {"db": db.name, "coll": "c"}
    assert event["documentKey"] == {"_id": 1}
    assert event["fullDocument"] == {"_id": 1, "v": 1}


def test_document_key_keeps_the_original_id_type(db: Database[Doc]) -> None:
    ids: list[Any] = [7, "seven", ObjectId(), Int64(1 << 40), 7.5, {"a": 1}]
    with db.c.watch(max_await_time_ms=200) as stream:
        for value in ids:
            db.c.insert_one({"_id": value})
        events = collect(stream, len(ids))
    keys = [e["documentKey"]["_id"] for e in events]
    assert keys == ids
    assert [type(k) for k in keys] == [type(v) for v in ids]


def test_update_events_describe_the_change(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1, "a": 1, "nested": {"x": 1, "y": 1}, "gone": True})
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.update_one(
            {"_id": 1}, {"$set": {"a": 2, "nested.x": 5, "new": "n"}, "$unset": {"gone": ""}}
        )
        (event,) = collect(stream, 1)
    description = event["updateDescription"]
    assert description["updatedFields"] == {"a": 2, "nested.x": 5, "new": "n"}
    assert description["removedFields"] == ["gone"]
    assert "fullDocument" not in event


def test_update_events_describe_array_changes(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1, "tags": ["a"], "list": ["foo", {"a": "bar"}, 1, 2], "s": [1]})
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.update_one({"_id": 1}, {"$push": {"tags": "b"}})
        db.c.update_one({"_id": 1}, [{"$set": {"list": ["foo", {"a": "bar"}]}}])
        db.c.update_one({"_id": 1}, {"$set": {"s": [1, 2]}})
        pushed, truncated, replaced = (e["updateDescription"] for e in collect(stream, 3))
    assert pushed["updatedFields"] == {"tags.1": "b"}
    assert truncated["updatedFields"] == {}
    assert truncated["truncatedArrays"] == [{"field": "list", "newSize": 2}]
    assert replaced["updatedFields"] == {"s": [1, 2]}  # a $set of the array: whole
    assert "disambiguatedPaths" not in pushed


def test_show_expanded_events_disambiguates_numeric_field_names(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1, "a": [{"1": 1}]})
    with db.c.watch(show_expanded_events=True, max_await_time_ms=200) as stream:
        db.c.update_one({"_id": 1}, {"$set": {"a.0.1": 2}})
        (event,) = collect(stream, 1)
    assert event["updateDescription"]["updatedFields"] == {"a.0.1": 2}
    assert event["updateDescription"]["disambiguatedPaths"] == {"a.0.1": ["a", 0, "1"]}


def test_full_document_update_lookup_returns_the_current_document(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1, "v": 0})
    with db.c.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
        db.c.update_one({"_id": 1}, {"$set": {"v": 1}})
        (event,) = collect(stream, 1)
    assert event["fullDocument"] == {"_id": 1, "v": 1}


def test_post_and_pre_images_need_the_collection_option(db: Database[Doc]) -> None:
    db.create_collection("imaged", changeStreamPreAndPostImages={"enabled": True})
    db.imaged.insert_one({"_id": 1, "v": 0})
    db.plain.insert_one({"_id": 1, "v": 0})
    with db.watch(
        full_document="whenAvailable",
        full_document_before_change="whenAvailable",
        max_await_time_ms=200,
    ) as stream:
        db.imaged.update_one({"_id": 1}, {"$set": {"v": 1}})
        db.plain.update_one({"_id": 1}, {"$set": {"v": 1}})
        imaged, plain = collect(stream, 2)
    assert imaged["fullDocument"] == {"_id": 1, "v": 1}
    assert imaged["fullDocumentBeforeChange"] == {"_id": 1, "v": 0}
    assert plain["fullDocument"] is None
    assert plain["fullDocumentBeforeChange"] is None


def test_replace_and_delete_events(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1, "v": 0})
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.replace_one({"_id": 1}, {"w": 1})
        db.c.delete_one({"_id": 1})
        replace, delete = collect(stream, 2)
    assert replace["operationType"] == "replace"
    assert replace["fullDocument"] == {"_id": 1, "w": 1}
    assert delete["operationType"] == "delete"
    assert delete["documentKey"] == {"_id": 1}
    assert "fullDocument" not in delete


def test_every_write_path_produces_events(db: Database[Doc]) -> None:
    c = db.c
    with c.watch(max_await_time_ms=200) as stream:
        c.insert_one({"_id": 1})
        c.insert_many([{"_id": 2}, {"_id": 3}])
        c.update_one({"_id": 1}, {"$set": {"a": 1}})
        c.update_many({"_id": {"$in": [2, 3]}}, {"$set": {"a": 2}})
        c.update_one({"_id": 1}, [{"$set": {"b": {"$add": ["$a", 1]}}}])
        c.replace_one({"_id": 2}, {"r": 1})
        c.update_one({"_id": 4}, {"$set": {"u": 1}}, upsert=True)
        c.find_one_and_update({"_id": 1}, {"$inc": {"a": 1}})
        c.find_one_and_replace({"_id": 3}, {"r": 3})
        c.find_one_and_delete({"_id": 4})
        c.bulk_write(
            [
                InsertOne({"_id": 5}),
                UpdateOne({"_id": 5}, {"$set": {"x": 1}}),
                ReplaceOne({"_id": 5}, {"y": 1}),
                DeleteMany({"_id": 5}),
            ]
        )
        c.delete_many({})
        expected = [
            "insert",
            "insert",
            "insert",
            "update",
            "update",
            "update",
            "update",
            "replace",
            "insert",
            "update",
            "replace",
            "delete",
            "insert",
            "update",
            "replace",
            "delete",
            "delete",
            "delete",
            "delete",
        ]
        events = collect(stream, len(expected))
        assert_no_more(stream)
    assert [e["operationType"] for e in events] == expected


def test_a_burst_of_inserts_arrives_complete_and_in_order(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=200) as stream:
        for i in range(100):
            db.c.insert_one({"_id": i})
        events = collect(stream, 100)
        assert_no_more(stream)
    assert [e["documentKey"]["_id"] for e in events] == list(range(100))


def test_large_documents_travel_in_events(db: Database[Doc]) -> None:
    payload = "x" * (1024 * 1024)
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.insert_one({"_id": 1, "payload": payload})
        (event,) = collect(stream, 1)
    assert event["fullDocument"]["payload"] == payload


def test_concurrent_streams_of_several_clients(db: Database[Doc], mongo_uri: str) -> None:
    clients = [connect(mongo_uri) for _ in range(3)]
    try:
        streams: list[ChangeStream[Doc]] = [
            client[db.name].c.watch(max_await_time_ms=200) for client in clients
        ]
        streams += [client[db.name].watch(max_await_time_ms=200) for client in clients[:2]]
        writer = threading.Thread(
            target=lambda: [db.c.insert_one({"_id": i}) for i in range(20)],
            name="conformance-writer",
        )
        writer.start()
        writer.join()
        for stream in streams:
            assert [e["documentKey"]["_id"] for e in collect(stream, 20)] == list(range(20))
            stream.close()
    finally:
        for client in clients:
            client.close()


def test_split_large_event_fragments_resume_where_they_left_off(db: Database[Doc]) -> None:
    coll = db.create_collection("big", changeStreamPreAndPostImages={"enabled": True})
    coll.insert_one({"_id": 1, "value": "q" * 10 * 1024 * 1024})
    split: list[Doc] = [{"$changeStreamSplitLargeEvent": {}}]
    with coll.watch(split, full_document_before_change="required") as stream:
        coll.update_one({"_id": 1}, {"$set": {"value": "z" * 10 * 1024 * 1024}})
        first, second = collect(stream, 2, timeout=30)
    assert first["splitEvent"] == {"fragment": 1, "of": 2}
    assert second["splitEvent"] == {"fragment": 2, "of": 2}
    assert first["operationType"] == "update" and "fullDocumentBeforeChange" in second
    resumed_after = first["_id"]
    with coll.watch(
        split, full_document_before_change="required", resume_after=resumed_after
    ) as stream:
        (rest,) = collect(stream, 1, timeout=30)
    assert rest["splitEvent"] == {"fragment": 2, "of": 2} and rest["_id"] == second["_id"]
