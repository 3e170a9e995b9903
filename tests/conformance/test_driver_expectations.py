"""Answers drivers and their test suites expect from a MongoDB 7.0 replica-set member
(gaps pymongo's own suite found in the embedded server)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

Doc = dict[str, Any]


def test_server_info_and_get_parameter(mongo_client: MongoClient[Doc]) -> None:
    assert mongo_client.server_info()["version"]  # sends lowercase "buildinfo"
    fcv = mongo_client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
    assert fcv["featureCompatibilityVersion"] == {"version": "7.0"}
    with pytest.raises(OperationFailure, match="no option found"):
        mongo_client.admin.command({"getParameter": 1, "noSuchParameter": 1})


def test_an_empty_replacement_leaves_only_the_id(db: Database[Doc]) -> None:
    db.items.insert_one({"_id": 1, "a": 1, "b": 2})
    assert db.items.replace_one({"_id": 1}, {}).modified_count == 1
    assert db.items.find_one({"_id": 1}) == {"_id": 1}
    db.items.insert_one({"_id": 2, "a": 1})
    assert db.items.find_one_and_replace({"_id": 2}, {}) == {"_id": 2, "a": 1}
    assert db.items.find_one({"_id": 2}) == {"_id": 2}


def test_an_unknown_stage_is_unrecognized(db: Database[Doc]) -> None:
    with pytest.raises(OperationFailure) as unknown:
        list(db.items.aggregate([{"$noSuchStage": {}}]))
    assert unknown.value.code == 40324
    with pytest.raises(OperationFailure) as in_stream:
        db.items.watch([{"$noSuchStage": {}}])
    assert in_stream.value.code == 40324
    with pytest.raises(OperationFailure) as not_allowed:
        db.items.watch([{"$group": {"_id": None}}])
    assert not_allowed.value.code == 20


def test_a_change_stream_only_accepts_majority_read_concern(db: Database[Doc]) -> None:
    with pytest.raises(OperationFailure) as local:
        db.items.with_options(read_concern=ReadConcern("local")).watch()
    assert local.value.code == 72
    db.items.with_options(read_concern=ReadConcern("majority")).watch().close()


def test_a_projection_may_drop_the_operation_type(db: Database[Doc]) -> None:
    with db.items.watch([{"$project": {"operationType": 0}}], max_await_time_ms=200) as stream:
        db.items.insert_one({"_id": "x"})
        change = stream.next()
    assert "operationType" not in change and change["documentKey"] == {"_id": "x"}


def test_a_stream_that_drops_the_resume_token_is_not_resumable(db: Database[Doc]) -> None:
    with (
        pytest.raises(OperationFailure) as fatal,
        db.items.watch([{"$project": {"_id": 0}}], max_await_time_ms=200) as stream,
    ):
        db.items.insert_one({"_id": "y"})
        stream.next()
    assert fatal.value.code == 280
    assert fatal.value.has_error_label("NonResumableChangeStreamError")


def test_coll_mod_as_drivers_send_it_enables_pre_and_post_images(db: Database[Doc]) -> None:
    db.create_collection("items")
    db.command("collMod", "items", changeStreamPreAndPostImages={"enabled": True})
    with db.items.watch(full_document_before_change="required") as stream:
        db.items.insert_one({"_id": 1, "v": 1})
        db.items.update_one({"_id": 1}, {"$set": {"v": 2}})
        stream.next()  # the insert
        assert stream.next()["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
