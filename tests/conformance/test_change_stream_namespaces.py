"""drop, rename, dropDatabase and invalidate events, as MongoDB 6.0 sends them."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from .conftest import collect

Doc = dict[str, Any]


def test_dropping_a_watched_collection_sends_drop_then_invalidate(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 1})
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.drop()
        drop, invalidate = collect(stream, 2)
        assert not stream.alive
    assert drop["operationType"] == "drop"
    assert drop["ns"] == {"db": db.name, "coll": "c"}
    assert invalidate["operationType"] == "invalidate"


def test_a_database_stream_survives_a_collection_drop(db: Database[Doc]) -> None:
    db.a.insert_one({"_id": 1})
    with db.watch(max_await_time_ms=200) as stream:
        db.a.drop()
        db.b.insert_one({"_id": 2})
        drop, insert = collect(stream, 2)
        assert stream.alive
    assert drop["operationType"] == "drop"
    assert insert["operationType"] == "insert"


def test_no_event_is_lost_after_a_drop(db: Database[Doc]) -> None:
    db.users.insert_one({"_id": 0})
    db.users.drop()
    with db.users.watch(max_await_time_ms=200) as stream:
        db.users.insert_one({"_id": 1})
        db.users.insert_one({"_id": 2})
        assert [e["documentKey"]["_id"] for e in collect(stream, 2)] == [1, 2]


def test_rename_sends_a_rename_event(db: Database[Doc], mongo_client: MongoClient[Doc]) -> None:
    db.old.insert_one({"_id": 1})
    with db.watch(max_await_time_ms=200) as stream:
        mongo_client.admin.command("renameCollection", f"{db.name}.old", to=f"{db.name}.new")
        db.new.insert_one({"_id": 2})
        rename, insert = collect(stream, 2)
    assert rename["operationType"] == "rename"
    assert rename["to"] == {"db": db.name, "coll": "new"}
    assert insert["ns"]["coll"] == "new"


def test_drop_database_invalidates_a_database_stream(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.a.insert_one({"_id": 1})
    with db.watch(max_await_time_ms=200) as stream:
        mongo_client.drop_database(db.name)
        events = collect(stream, 3)
    assert [e["operationType"] for e in events] == ["drop", "dropDatabase", "invalidate"]


def test_start_after_an_invalidate_opens_a_new_stream_resume_after_does_not(
    db: Database[Doc],
) -> None:
    db.c.insert_one({"_id": 1})
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.drop()
        _, invalidate = collect(stream, 2)
    db.c.insert_one({"_id": 2})
    with db.c.watch(start_after=invalidate["_id"], max_await_time_ms=200) as restarted:
        assert [e["documentKey"]["_id"] for e in collect(restarted, 1)] == [2]
    with pytest.raises(OperationFailure) as error:
        db.c.watch(resume_after=invalidate["_id"])
    assert error.value.code == 260


def test_show_expanded_events_reports_ddl_and_collection_uuids(db: Database[Doc]) -> None:
    db.create_collection("c0")
    db.create_collection("foo")
    with (
        db.watch(show_expanded_events=True, max_await_time_ms=200) as expanded,
        db.c0.watch(max_await_time_ms=200) as plain,
    ):
        db.c0.insert_one({"x": 1})
        db.c0.create_index("x")
        db.c0.drop_index("x_1")
        db.command({"collMod": "c0"})
        db.create_collection("v", viewOn="c0")
        db.c0.rename("foo", dropTarget=True)
        events = collect(expanded, 6)
        assert [e["operationType"] for e in collect(plain, 3)] == ["insert", "rename", "invalidate"]
    kinds = [e["operationType"] for e in events]
    assert kinds == ["insert", "createIndexes", "dropIndexes", "modify", "create", "rename"]
    c0 = events[0]["collectionUUID"]
    assert all(e["collectionUUID"] == c0 for i, e in enumerate(events) if i != 4)
    assert [i["name"] for i in events[1]["operationDescription"]["indexes"]] == ["x_1"]
    assert events[4]["operationDescription"]["viewOn"] == "c0"
    renamed = events[5]["operationDescription"]
    assert renamed["to"] == {"db": db.name, "coll": "foo"}
    assert "dropTarget" in renamed and renamed["dropTarget"] != c0
