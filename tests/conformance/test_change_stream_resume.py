"""Resuming change streams, resume tokens, waiting getMore and history loss."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from mongoreact.testing import EmbeddedServer

from .conftest import collect, connect

Doc = dict[str, Any]


def test_resume_after_an_event_token(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        first, *_ = collect(stream, 3)
    with db.c.watch(resume_after=first["_id"], max_await_time_ms=200) as resumed:
        assert [e["documentKey"]["_id"] for e in collect(resumed, 2)] == [2, 3]


def test_start_after_an_event_token(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.insert_many([{"_id": 1}, {"_id": 2}])
        first, _ = collect(stream, 2)
    with db.c.watch(start_after=first["_id"], max_await_time_ms=200) as resumed:
        assert [e["documentKey"]["_id"] for e in collect(resumed, 1)] == [2]


def test_start_at_operation_time_from_an_event_cluster_time(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=200) as stream:
        db.c.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        _, second, _ = collect(stream, 3)
    at = second["clusterTime"]
    with db.c.watch(start_at_operation_time=at, max_await_time_ms=200) as resumed:
        keys = [e["documentKey"]["_id"] for e in collect(resumed, 2)]
    assert keys[-1] == 3
    assert 2 in keys  # events at the same cluster time are included


def test_start_at_operation_time_from_a_session_operation_time(
    db: Database[Doc], mongo_client: MongoClient[Doc]
) -> None:
    db.c.insert_one({"_id": 0})
    with mongo_client.start_session() as session:
        db.c.find_one({"_id": 0}, session=session)
        start = session.operation_time
    assert isinstance(start, Timestamp)
    db.c.insert_one({"_id": 1})  # written after the operation time, before the watch
    with db.c.watch(start_at_operation_time=start, max_await_time_ms=200) as stream:
        # The operation time is that of the latest write seen (the insert of 0), and
        # startAtOperationTime is inclusive, so that insert may come first.
        events = collect(stream, 1)
        if events[0]["documentKey"]["_id"] == 0:
            events = collect(stream, 1)
    assert events[0]["documentKey"]["_id"] == 1


def test_post_batch_resume_token_advances_on_empty_batches(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 0})
    with db.c.watch(max_await_time_ms=100) as stream:
        assert stream.try_next() is None
        first = stream.resume_token
        db.other.insert_one({"_id": 1})  # not on this stream, but moves the clock
        deadline = time.monotonic() + 5
        while stream.resume_token == first:
            assert time.monotonic() < deadline, "postBatchResumeToken never advanced"
            assert stream.try_next() is None
    assert first is not None


def test_resuming_from_a_post_batch_token_misses_nothing(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=100) as stream:
        assert stream.try_next() is None
        token = stream.resume_token
    db.c.insert_one({"_id": 1})
    with db.c.watch(resume_after=token, max_await_time_ms=200) as resumed:
        assert [e["documentKey"]["_id"] for e in collect(resumed, 1)] == [1]


def test_get_more_waits_max_await_time_and_wakes_on_a_write(db: Database[Doc]) -> None:
    with db.c.watch(max_await_time_ms=800) as stream:
        started = time.monotonic()
        assert stream.try_next() is None
        waited = time.monotonic() - started
        assert 0.5 < waited < 5
        db.c.insert_one({"_id": 1})
        started = time.monotonic()
        assert stream.try_next() is not None
        assert time.monotonic() - started < 0.7


def test_get_more_honours_batch_size(db: Database[Doc]) -> None:
    with db.c.watch(batch_size=3, max_await_time_ms=200) as stream:
        db.c.insert_many([{"_id": i} for i in range(10)])
        assert len(collect(stream, 10)) == 10
    # Raw command level: the batch never exceeds batchSize.
    reply = db.command("aggregate", "c", pipeline=[{"$changeStream": {}}], cursor={})
    cursor_id = reply["cursor"]["id"]
    db.c.insert_many([{"_id": 100 + i} for i in range(5)])
    more = db.command("getMore", cursor_id, collection="c", batchSize=2, maxTimeMS=200)
    assert len(more["cursor"]["nextBatch"]) == 2
    db.command("killCursors", "c", cursors=[cursor_id])


def test_kill_cursors_closes_a_stream(db: Database[Doc]) -> None:
    reply = db.command("aggregate", "c", pipeline=[{"$changeStream": {}}], cursor={})
    cursor_id = reply["cursor"]["id"]
    killed = db.command("killCursors", "c", cursors=[cursor_id])
    assert killed["cursorsKilled"] == [cursor_id]
    with pytest.raises(OperationFailure) as error:
        db.command("getMore", cursor_id, collection="c", maxTimeMS=100)
    assert error.value.code == 43


def test_an_invalid_stage_is_reported_with_its_own_code_not_history_lost(
    db: Database[Doc],
) -> None:
    with pytest.raises(OperationFailure) as error:
        db.c.watch([{"$group": {"_id": None}}])
    assert error.value.code not in (280, 286)
    with pytest.raises(OperationFailure) as bad_option:
        db.command(
            "aggregate", "c", pipeline=[{"$changeStream": {"fullDocument": "bogus"}}], cursor={}
        )
    assert bad_option.value.code not in (280, 286)


def test_start_at_operation_time_before_the_history_fails_with_history_lost(
    db: Database[Doc],
) -> None:
    with pytest.raises(OperationFailure) as error:
        db.c.watch(start_at_operation_time=Timestamp(1, 1)).try_next()
    assert error.value.code == 286


class TestRetention:
    """Against a server that keeps 50 events (a real oplog cannot be exhausted here)."""

    def test_resuming_from_a_token_older_than_history_fails_with_286(
        self, small_history_server: EmbeddedServer
    ) -> None:
        with connect(small_history_server.uri) as client:
            coll = client.retention.resume
            with coll.watch(max_await_time_ms=100) as stream:
                coll.insert_one({"_id": "first"})
                (first,) = collect(stream, 1)
            coll.insert_many([{"_id": i} for i in range(60)])
            with pytest.raises(OperationFailure) as error:
                coll.watch(resume_after=first["_id"]).try_next()
            assert error.value.code == 286

    def test_an_open_stream_that_falls_behind_fails_with_286(
        self, small_history_server: EmbeddedServer
    ) -> None:
        with connect(small_history_server.uri) as client:
            coll = client.retention.behind
            with coll.watch(max_await_time_ms=100) as stream:
                assert stream.try_next() is None
                coll.insert_many([{"_id": i} for i in range(60)])
                with pytest.raises(OperationFailure) as error:
                    collect(stream, 60)
            assert error.value.code == 286
