"""Transactions see a snapshot and conflict per document, first writer wins, as on
MongoDB: writes elsewhere never fail a commit, and no update is ever lost."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import OperationFailure

Doc = dict[str, Any]


def _conflict(error: OperationFailure, code: int = 112) -> bool:
    return error.code == code and error.has_error_label("TransientTransactionError")


def test_writes_to_other_documents_do_not_fail_a_commit(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.accounts.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    db.create_collection("other")
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.accounts.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        db.accounts.insert_one({"_id": 3, "n": 0}, session=session)
        # Others write meanwhile: another document of the same collection, another
        # collection, and a new document.
        db.accounts.update_one({"_id": 2}, {"$inc": {"n": 5}})
        db.accounts.insert_one({"_id": 4, "n": 0})
        db.other.insert_one({"x": 1})
        session.commit_transaction()
    assert list(db.accounts.find(sort=[("_id", 1)])) == [
        {"_id": 1, "n": 1},
        {"_id": 2, "n": 5},
        {"_id": 3, "n": 0},
        {"_id": 4, "n": 0},
    ]
    assert db.other.count_documents({}) == 1
    assert db.accounts.find_one({"n": 1}) == {"_id": 1, "n": 1}


def test_a_document_changed_after_the_snapshot_cannot_be_written(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.accounts.insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    with mongo_client.start_session() as session:
        session.start_transaction()
        assert db.accounts.find_one({"_id": 1}, session=session) == {"_id": 1, "n": 0}
        db.accounts.update_one({"_id": 1}, {"$inc": {"n": 5}})  # after the snapshot
        # The snapshot still sees the old value...
        assert db.accounts.find_one({"_id": 1}, session=session) == {"_id": 1, "n": 0}
        # ...and writing over the newer one would lose it.
        with pytest.raises(OperationFailure) as conflict:
            db.accounts.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)
        assert _conflict(conflict.value)
        session.abort_transaction()
    assert db.accounts.find_one({"_id": 1}) == {"_id": 1, "n": 5}


def test_a_unique_value_taken_by_another_transaction_is_a_conflict(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.users.create_index("email", unique=True)
    with mongo_client.start_session() as first, mongo_client.start_session() as second:
        first.start_transaction()
        db.users.insert_one({"_id": 1, "email": "a@x"}, session=first)
        second.start_transaction()
        try:
            # MongoDB refuses it at once; the embedded server at the commit.
            db.users.insert_one({"_id": 2, "email": "a@x"}, session=second)
            first.commit_transaction()
            with pytest.raises(OperationFailure) as conflict:
                second.commit_transaction()
        except OperationFailure as error:
            assert _conflict(error)
            first.commit_transaction()
        else:
            assert _conflict(conflict.value)
    assert list(db.users.find()) == [{"_id": 1, "email": "a@x"}]


def test_a_transaction_moving_a_unique_value_commits_over_other_writes(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.users.create_index("email", unique=True)
    db.users.insert_many([{"_id": 1, "email": "a@x"}, {"_id": 2, "email": "b@x"}])
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.users.update_one({"_id": 1}, {"$set": {"email": "tmp"}}, session=session)
        db.users.update_one({"_id": 2}, {"$set": {"email": "a@x"}}, session=session)
        db.users.update_one({"_id": 1}, {"$set": {"email": "b@x"}}, session=session)
        db.users.insert_one({"_id": 3, "email": "c@x"})  # someone else, meanwhile
        session.commit_transaction()
    assert {d["_id"]: d["email"] for d in db.users.find()} == {1: "b@x", 2: "a@x", 3: "c@x"}
    assert db.users.find_one({"email": "a@x"}) == {"_id": 2, "email": "a@x"}
    with pytest.raises(OperationFailure):
        db.users.insert_one({"_id": 4, "email": "b@x"})  # the index follows the commit


def test_a_transaction_creating_a_collection_commits_over_other_writes(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.create_collection("existing")
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.fresh.insert_one({"_id": 1}, session=session)
        db.existing.insert_one({"_id": 1})  # someone else, meanwhile
        session.commit_transaction()
    assert db.fresh.find_one() == {"_id": 1}
    assert db.existing.find_one() == {"_id": 1}


def test_a_transaction_into_an_empty_collection_commits_over_other_writes(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.items.create_index("n")  # the collection exists, without documents
    db.create_collection("plain")  # likewise, without an index either
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.items.insert_one({"_id": 1, "n": 1}, session=session)
        db.plain.insert_one({"_id": 1}, session=session)
        db.items.insert_one({"_id": 2, "n": 2})  # someone else, meanwhile
        session.commit_transaction()
    assert sorted(d["_id"] for d in db.items.find()) == [1, 2]
    assert db.items.find_one({"n": 1}) == {"_id": 1, "n": 1}
    assert list(db.plain.find()) == [{"_id": 1}]


def test_a_replacement_changing_the_numeric_type_of_the_id_merges(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.items.insert_one({"_id": 0.0, "v": "old"})
    with mongo_client.start_session() as session:
        session.start_transaction()
        db.items.replace_one({"_id": 0}, {"_id": 0, "v": "new"}, session=session)
        db.items.insert_one({"_id": 5})  # someone else, meanwhile
        session.commit_transaction()
    assert list(db.items.find({"_id": 0})) == [{"_id": 0, "v": "new"}]
    assert db.items.count_documents({}) == 2


def test_a_commit_over_other_writes_publishes_its_events_with_its_session(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.items.insert_one({"_id": 1, "n": 0})
    with db.items.watch(max_await_time_ms=200) as stream:
        with mongo_client.start_session() as session:
            session.start_transaction()
            db.items.update_one({"_id": 1}, {"$set": {"n": 1}}, session=session)
            db.items.insert_one({"_id": 2}, session=session)
            db.items.insert_one({"_id": 3})  # someone else, meanwhile
            session.commit_transaction()
        events = [stream.next() for _ in range(3)]
    assert [(e["operationType"], e["documentKey"]["_id"]) for e in events] == [
        ("insert", 3),
        ("update", 1),
        ("insert", 2),
    ]
    assert "lsid" not in events[0]
    assert events[1]["updateDescription"]["updatedFields"] == {"n": 1}
    assert events[1]["lsid"] == events[2]["lsid"]


@pytest.fixture
def short_lifetime(mongo_client: MongoClient[Doc]) -> Iterator[None]:
    admin = mongo_client.admin
    was = admin.command({"setParameter": 1, "transactionLifetimeLimitSeconds": 1})["was"]
    yield
    admin.command({"setParameter": 1, "transactionLifetimeLimitSeconds": was})


@pytest.mark.usefixtures("short_lifetime")
def test_an_abandoned_transaction_does_not_hold_its_documents(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.accounts.insert_one({"_id": 1, "n": 0})
    abandoned = mongo_client.start_session()
    abandoned.start_transaction()
    db.accounts.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=abandoned)
    # Another writer gets the document once the first transaction outlived its
    # lifetime (MongoDB's reaper runs periodically, hence the generous deadline).
    deadline = time.monotonic() + 90
    while True:
        with mongo_client.start_session() as session:
            session.start_transaction()
            try:
                db.accounts.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=session)
                session.commit_transaction()
                break
            except OperationFailure as error:
                assert _conflict(error)
                assert time.monotonic() < deadline, "the abandoned transaction never expired"
        threading.Event().wait(0.2)
    with pytest.raises(OperationFailure) as aborted:
        abandoned.commit_transaction()
    assert aborted.value.code == 251
    abandoned.end_session()
    assert db.accounts.find_one({"_id": 1}) == {"_id": 1, "n": 10}


def test_concurrent_transactions_lose_no_update(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    """Invariant under random interleavings: each counter equals the number of effects
    committed for it, and every transaction that returned committed exactly once."""
    counters, workers, rounds = 3, 4, 15
    db.counters.insert_many([{"_id": k, "n": 0} for k in range(counters)])
    db.create_collection("effects")
    committed: list[int] = []
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with mongo_client.start_session() as session:
                for round_ in range(rounds):
                    key = rng.randrange(counters)
                    token = seed * 1000 + round_

                    def transfer(s: ClientSession, key: int = key, token: int = token) -> None:
                        found = db.counters.find_one({"_id": key}, session=s)
                        assert found is not None
                        db.effects.insert_one({"_id": token, "key": key}, session=s)
                        db.counters.update_one(
                            {"_id": key}, {"$set": {"n": found["n"] + 1}}, session=s
                        )
                        if rng.random() < 0.3:  # an unrelated write meanwhile
                            db.noise.insert_one({"token": token})

                    session.with_transaction(transfer)
                    committed.append(token)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(1, workers + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(committed) == workers * rounds
    effects = list(db.effects.find())
    assert sorted(e["_id"] for e in effects) == sorted(committed)
    for key in range(counters):
        counter = db.counters.find_one({"_id": key})
        assert counter is not None
        assert counter["n"] == sum(1 for e in effects if e["key"] == key)
