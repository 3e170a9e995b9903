"""Topology, cluster times, cursor ids and behaviour under several clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from bson import Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, WriteConcernError
from pymongo.write_concern import WriteConcern

from mongoreact.testing import EmbeddedServer

from .conftest import collect, connect, wait_for

Doc = dict[str, Any]
_BSON_INT64 = 0x12


def test_hello_describes_a_replica_set_primary(mongo_client: MongoClient[Doc]) -> None:
    hello = mongo_client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"]
    assert hello["primary"] in hello["hosts"]
    assert hello["maxWireVersion"] >= 17  # MongoDB 6.0
    assert "logicalSessionTimeoutMinutes" in hello


def test_a_write_concern_of_more_members_than_there_are_fails_after_the_write(
    db: Database[Doc],
) -> None:
    members = len(db.client.admin.command("hello")["hosts"])
    unsatisfiable = db.items.with_options(write_concern=WriteConcern(w=members + 1))
    with pytest.raises(WriteConcernError) as raised:
        unsatisfiable.insert_one({"_id": 1})
    assert raised.value.code == 100  # UnsatisfiableWriteConcern
    assert db.items.find_one({"_id": 1}) == {"_id": 1}  # applied all the same
    with pytest.raises(WriteConcernError):  # commands as well as writes
        db.client.get_database(
            db.name, write_concern=WriteConcern(w=members + 1)
        ).create_collection("other")
    assert "other" in db.list_collection_names()
    # One member, or a majority of them, acknowledge as usual.
    db.items.with_options(write_concern=WriteConcern(w="majority")).insert_one({"_id": 2})
    db.items.with_options(write_concern=WriteConcern(w=1)).insert_one({"_id": 3})


def test_drop_dups_is_ignored_as_since_mongodb_3(db: Database[Doc]) -> None:
    db.items.insert_many([{"i": 1}, {"i": 1}])
    with pytest.raises(DuplicateKeyError):  # the duplicates are not dropped
        db.items.create_index("i", unique=True, dropDups=True)
    assert db.items.create_index("j", dropDups=True) == "j_1"
    assert db.items.count_documents({}) == 2


def test_a_collection_that_does_not_exist_lists_no_indexes(db: Database[Doc]) -> None:
    assert list(db.missing.list_indexes()) == []
    db.present.insert_one({})
    assert [index["name"] for index in db.present.list_indexes()] == ["_id_"]


def test_any_non_zero_number_in_a_projection_includes_the_field(db: Database[Doc]) -> None:
    db.items.insert_one({"_id": 1, "a": 1, "b": 2})
    assert db.items.find_one({}, {"a": 2}) == {"_id": 1, "a": 1}
    assert db.items.find_one_and_update({}, {"$set": {"c": 3}}, {"b": -1.5}) == {"_id": 1, "b": 2}


def test_replies_carry_operation_and_cluster_time(db: Database[Doc]) -> None:
    reply = db.command("ping")
    assert isinstance(reply["operationTime"], Timestamp)
    assert isinstance(reply["$clusterTime"]["clusterTime"], Timestamp)


def _int64_field(raw: bytes | memoryview, name: str) -> bool:
    marker = bytes([_BSON_INT64]) + name.encode() + b"\x00"
    return marker in bytes(raw)


def test_cursor_ids_are_int64_in_find_aggregate_and_kill_cursors(db: Database[Doc]) -> None:
    db.c.insert_many([{"_id": i} for i in range(5)])
    raw = CodecOptions(document_class=RawBSONDocument)
    found = db.command("find", "c", batchSize=1, codec_options=raw)
    assert _int64_field(found.raw, "id")
    aggregated = db.command(
        "aggregate", "c", pipeline=[], cursor={"batchSize": 1}, codec_options=raw
    )
    assert _int64_field(aggregated.raw, "id")
    cursor_id = db.command("find", "c", batchSize=1)["cursor"]["id"]
    more = db.command("getMore", cursor_id, collection="c", batchSize=1)
    assert more["cursor"]["id"] == cursor_id
    killed = db.command("killCursors", "c", cursors=[cursor_id], codec_options=raw)
    assert _int64_field(killed.raw, "cursorsKilled") or b"cursorsKilled" in killed.raw


def test_a_waiting_get_more_does_not_block_other_clients(db: Database[Doc], mongo_uri: str) -> None:
    with connect(mongo_uri) as other, db.c.watch(max_await_time_ms=3000) as stream:
        waiting = threading.Thread(target=stream.try_next, name="conformance-waiter")
        waiting.start()
        started = time.monotonic()
        other[db.name].d.insert_one({"_id": 1})
        assert other[db.name].d.find_one({"_id": 1}) == {"_id": 1}
        assert time.monotonic() - started < 1.0
        waiting.join()


def _fill(db: Database[Doc], count: int) -> None:
    db.big.insert_many([{"i": i, "even": i % 2 == 0, "pad": "x" * 100} for i in range(count)])


# Each used to hold every other connection for its whole run.
SLOW_COMMANDS: dict[str, Callable[[Database[Doc]], object]] = {
    "insert_many": lambda db: _fill(db, 4000),
    "update_many": lambda db: db.big.update_many({"even": True}, {"$set": {"u": 1}}),
    "delete_many": lambda db: db.big.delete_many({"even": True}),
}


@pytest.mark.parametrize("command", list(SLOW_COMMANDS))
def test_a_slow_command_does_not_stall_other_clients(
    db: Database[Doc], mongo_uri: str, command: str
) -> None:
    if command != "insert_many":
        _fill(db, 4000)
    answered: list[float] = []  # when each of another client's reads was answered
    done = threading.Event()

    def probe() -> None:
        with connect(mongo_uri) as client:
            client[db.name].probe.insert_one({"_id": 0})
            while not done.is_set():
                client[db.name].probe.find_one({"_id": 0})
                answered.append(time.monotonic())

    thread = threading.Thread(target=probe, name="conformance-probe")
    thread.start()
    wait_for(lambda: len(answered) > 3)
    started = time.monotonic()
    SLOW_COMMANDS[command](db)
    finished = time.monotonic()
    done.set()
    thread.join()
    # Not a timing bound: a server that ran the command in one go answers no read while
    # it runs (one at most, straddling its start); this one answers them all along.
    during = [t for t in answered if started < t < finished]
    assert len(during) >= 3, f"{len(during)} reads answered in {finished - started:.2f}s"


def test_a_cursor_returns_101_documents_first_then_the_rest(db: Database[Doc]) -> None:
    db.c.insert_many([{"i": i} for i in range(250)])
    for command in ({"find": "c"}, {"aggregate": "c", "pipeline": [], "cursor": {}}):
        reply = db.command(command)
        assert len(reply["cursor"]["firstBatch"]) == 101
        assert reply["cursor"]["id"] != 0
        seen = len(reply["cursor"]["firstBatch"])
        cursor_id = reply["cursor"]["id"]
        while cursor_id:
            more = db.command({"getMore": cursor_id, "collection": "c"})["cursor"]
            seen += len(more["nextBatch"])
            cursor_id = more["id"]
        assert seen == 250
    single = db.command({"find": "c", "singleBatch": True})["cursor"]
    assert (len(single["firstBatch"]), single["id"]) == (250, 0)


def test_concurrent_clients_write_and_read_consistently(db: Database[Doc], mongo_uri: str) -> None:
    def work(worker: int) -> None:
        with connect(mongo_uri) as client:
            coll = client[db.name].shared
            for i in range(50):
                coll.insert_one({"_id": f"{worker}-{i}", "w": worker})
                coll.update_one({"_id": f"{worker}-{i}"}, {"$inc": {"n": 1}})

    threads = [threading.Thread(target=work, args=(w,), name=f"conf-{w}") for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.shared.count_documents({"n": 1}) == 200


class TestStreamCleanup:
    """Server-side cursor bookkeeping, read through the embedded server's status command."""

    @staticmethod
    def _open_streams(client: MongoClient[Doc]) -> int:
        return int(client.admin.command("mongoreactServerStatus")["openChangeStreams"])

    def test_streams_of_a_closed_client_are_cleaned_up(
        self, small_history_server: EmbeddedServer
    ) -> None:
        with connect(small_history_server.uri) as observer:
            before = self._open_streams(observer)
            client = connect(small_history_server.uri)
            stream = client.cleanup.c.watch(max_await_time_ms=50)
            assert stream.try_next() is None
            assert self._open_streams(observer) == before + 1
            client.close()
            wait_for(lambda: self._open_streams(observer) == before)

    def test_abandoned_streams_are_closed_after_the_cursor_timeout(
        self, small_history_server: EmbeddedServer
    ) -> None:
        with connect(small_history_server.uri) as client:
            before = self._open_streams(client)
            reply = client.cleanup.command(
                "aggregate", "c", pipeline=[{"$changeStream": {}}], cursor={}
            )
            assert reply["cursor"]["id"] != 0
            assert self._open_streams(client) == before + 1
            wait_for(lambda: self._open_streams(client) == before)

    def test_history_keeps_recording_with_no_stream_open(
        self, small_history_server: EmbeddedServer
    ) -> None:
        with connect(small_history_server.uri) as client:
            coll = client.cleanup.unwatched
            with coll.watch(max_await_time_ms=50) as stream:
                assert stream.try_next() is None
                token = stream.resume_token
            coll.insert_one({"_id": 1})
            with coll.watch(resume_after=token, max_await_time_ms=200) as resumed:
                assert collect(resumed, 1)[0]["documentKey"]["_id"] == 1
