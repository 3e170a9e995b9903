"""Transactions, BSON round trips and document size limits."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Timestamp
from bson.errors import InvalidDocument
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteError

from .conftest import assert_no_more, collect

Doc = dict[str, Any]


def test_a_committed_transaction_is_visible_and_emits_its_events(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.create_collection("t")
    with db.t.watch(max_await_time_ms=200) as stream:
        with mongo_client.start_session() as session:

            def body(s: Any) -> None:
                db.t.insert_one({"_id": 1}, session=s)
                db.t.update_one({"_id": 1}, {"$set": {"v": 1}}, session=s)
                assert db.t.find_one({"_id": 1}) is None  # isolated until commit

            session.with_transaction(body)
        events = collect(stream, 2)
    assert [e["operationType"] for e in events] == ["insert", "update"]
    assert db.t.find_one({"_id": 1}) == {"_id": 1, "v": 1}


def test_an_aborted_transaction_rolls_back_and_emits_nothing(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.t.insert_one({"_id": 1, "v": 0})
    with db.t.watch(max_await_time_ms=200) as stream:
        with mongo_client.start_session() as session:
            session.start_transaction()
            db.t.update_one({"_id": 1}, {"$set": {"v": 1}}, session=session)
            db.t.insert_one({"_id": 2}, session=session)
            session.abort_transaction()
        assert_no_more(stream)
    assert list(db.t.find()) == [{"_id": 1, "v": 0}]


def test_bson_values_round_trip(db: Database[Doc]) -> None:
    value = {
        "_id": ObjectId(),
        "decimal": Decimal128(Decimal("12.345")),
        "date": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000),
        "int64": Int64(1 << 40),
        "int32": 7,
        "double": 1.5,
        "binary": Binary(b"\x00\x01", 128),
        "uuid": Binary.from_uuid(uuid.UUID(int=1)),
        "ts": Timestamp(1_700_000_000, 3),
        "nested": {"list": [1, "a", {"deep": None}], "bool": True},
    }
    db.t.insert_one(value)
    found = db.t.find_one({"_id": value["_id"]})
    assert found == value
    assert list(found) == list(value)  # field order is kept
    assert isinstance(found["int64"], int) and found["int64"] == 1 << 40


def test_documents_over_16_mib_are_rejected_on_insert(db: Database[Doc]) -> None:
    with pytest.raises((DocumentTooLarge, InvalidDocument, OperationFailure)):
        db.t.insert_one({"_id": 1, "blob": "x" * (17 * 1024 * 1024)})


def test_an_update_that_grows_a_document_past_16_mib_is_rejected(db: Database[Doc]) -> None:
    db.t.insert_one({"_id": 1, "a": "x" * (9 * 1024 * 1024)})
    with pytest.raises((WriteError, OperationFailure)):
        db.t.update_one({"_id": 1}, {"$set": {"b": "y" * (9 * 1024 * 1024)}})
