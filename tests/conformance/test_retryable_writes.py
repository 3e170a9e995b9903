"""Retryable writes: the same write sent again with the same session and transaction
number is answered from the first attempt, not applied twice (as MongoDB does after a
network error or a step-down)."""

from __future__ import annotations

from typing import Any

import pytest
from bson.int64 import Int64
from pymongo.database import Database
from pymongo.errors import OperationFailure

Doc = dict[str, Any]


def test_a_retried_write_is_applied_once(db: Database[Doc]) -> None:
    db.counters.insert_one({"_id": 1, "n": 0})
    with db.client.start_session() as session:
        increment = {
            "update": "counters",
            "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}],
            "txnNumber": Int64(7),
        }
        first = db.command(increment, session=session)
        again = db.command(increment, session=session)  # the driver's retry
        assert (first["n"], first["nModified"]) == (again["n"], again["nModified"]) == (1, 1)
        assert db.counters.find_one({"_id": 1}) == {"_id": 1, "n": 1}
        modify = {
            "findAndModify": "counters", "query": {"_id": 1}, "update": {"$inc": {"n": 1}},
            "new": True, "txnNumber": Int64(8),
        }  # fmt: skip
        first = db.command(modify, session=session)
        again = db.command(modify, session=session)
        assert first["value"] == again["value"] == {"_id": 1, "n": 2}
        assert db.counters.find_one({"_id": 1}) == {"_id": 1, "n": 2}
        with pytest.raises(OperationFailure) as too_old:
            db.command({**increment, "txnNumber": Int64(6)}, session=session)
        assert too_old.value.code == 225  # TransactionTooOld


def test_writes_with_new_transaction_numbers_all_apply(db: Database[Doc]) -> None:
    with db.client.start_session() as session:
        for number in range(1, 4):
            db.command(
                {"insert": "items", "documents": [{"n": number}], "txnNumber": Int64(number)},
                session=session,
            )
    assert db.items.count_documents({}) == 3
