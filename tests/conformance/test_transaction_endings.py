"""How failed transactions end: the codes and labels drivers act on, and sessions that
stay usable afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

Doc = dict[str, Any]


def test_a_write_conflict_is_transient_and_leaves_the_session_usable(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.accounts.insert_one({"_id": 1, "balance": 0})
    with mongo_client.start_session() as first, mongo_client.start_session() as second:
        first.start_transaction()
        db.accounts.update_one({"_id": 1}, {"$inc": {"balance": 1}}, session=first)
        second.start_transaction()
        with pytest.raises(OperationFailure) as conflict:
            db.accounts.update_one({"_id": 1}, {"$inc": {"balance": 10}}, session=second)
        assert conflict.value.code == 112
        assert conflict.value.has_error_label("TransientTransactionError")
        first.commit_transaction()
        with pytest.raises(OperationFailure) as aborted:
            db.accounts.find_one({"_id": 1}, session=second)  # still in the dead transaction
        assert aborted.value.code == 251
        second.abort_transaction()
        # The session is not stuck in the dead transaction: its writes are everyone's.
        db.accounts.update_one({"_id": 1}, {"$inc": {"balance": 100}}, session=second)
    assert db.accounts.find_one({"_id": 1}) == {"_id": 1, "balance": 101}


def test_with_transaction_retries_a_write_conflict(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.accounts.insert_many([{"_id": 1, "balance": 0}, {"_id": 2}])
    attempts = 0

    def transfer(session: Any) -> None:
        nonlocal attempts
        attempts += 1
        db.accounts.find_one({"_id": 2}, session=session)  # the snapshot is taken
        if attempts == 1:
            db.accounts.update_one({"_id": 1}, {"$inc": {"balance": 10}})  # after it
        db.accounts.update_one({"_id": 1}, {"$inc": {"balance": 1}}, session=session)

    with mongo_client.start_session() as session:
        session.with_transaction(transfer)
    assert attempts == 2
    assert db.accounts.find_one({"_id": 1}) == {"_id": 1, "balance": 11}


def test_an_error_inside_a_transaction_aborts_it(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.items.insert_one({"_id": 1})
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.items.insert_one({"_id": 2}, session=session)
        with pytest.raises(DuplicateKeyError):
            db.items.insert_one({"_id": 1}, session=session)
        with pytest.raises(OperationFailure) as statement:
            db.items.insert_one({"_id": 3}, session=session)  # a statement after the abort
        assert statement.value.code == 251
        assert statement.value.has_error_label("TransientTransactionError")
        with pytest.raises(OperationFailure) as aborted:
            session.commit_transaction()
        assert aborted.value.code == 251  # NoSuchTransaction
        assert aborted.value.has_error_label("TransientTransactionError")
    assert sorted(d["_id"] for d in db.items.find()) == [1]  # the insert of 2 is gone


def test_the_events_of_a_transaction_carry_its_session_and_number(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    with db.items.watch(max_await_time_ms=200) as stream:
        with mongo_client.start_session() as session:
            session.with_transaction(
                lambda s: db.items.insert_many([{"_id": 1}, {"_id": 2}], session=s)
            )
            session_id = session.session_id
        db.items.insert_one({"_id": 3})  # not in a transaction
        events = [stream.next() for _ in range(3)]
    in_transaction, alone = events[:2], events[2]
    for event in in_transaction:
        assert event["lsid"]["id"] == session_id["id"]
        assert isinstance(event["txnNumber"], int) and event["txnNumber"] >= 1
    assert "lsid" not in alone and "txnNumber" not in alone


def test_inside_a_transaction_no_write_concern_and_no_existing_collection(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.create_collection("existing")
    with mongo_client.start_session() as session:
        session.start_transaction()
        with pytest.raises(OperationFailure) as concern:
            db.command(
                {"insert": "items", "documents": [{}], "writeConcern": {"w": 1}},
                session=session,
            )
        assert concern.value.code == 72
        session.abort_transaction()
        session.start_transaction()
        with pytest.raises(OperationFailure) as exists:
            db.create_collection("existing", session=session, check_exists=False)
        assert exists.value.code == 48
        session.abort_transaction()


def test_ddl_is_refused_inside_a_transaction(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.items.insert_one({"a": 1})
    refused: list[Callable[[ClientSession], object]] = [
        lambda s: db.items.drop(session=s),
        lambda s: db.items.create_index("a", session=s),
        lambda s: db.items.drop_indexes(session=s),
        lambda s: db.items.rename("other", session=s),
        lambda s: db.items.aggregate([{"$out": "copy"}], session=s),
        lambda s: db.items.aggregate([{"$merge": {"into": "copy"}}], session=s),
    ]
    for operation in refused:
        with mongo_client.start_session() as session:
            session.start_transaction()
            with pytest.raises(OperationFailure) as error:
                operation(session)
            assert error.value.code == 263
            session.abort_transaction()
    assert db.items.count_documents({}) == 1
