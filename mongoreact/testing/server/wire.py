"""The TCP front end: reads wire messages, routes commands, decorates replies.

Commands mongoeco handles correctly go to its ``WireCommandExecutor`` (mongoeco 4.11.0,
``mongoeco.wire.executor``). This layer adds what a MongoDB 6.0+ replica-set primary
does and mongoeco's own wire server does not: ``hello`` with replica-set fields, cluster
times on every reply, change streams, ``$merge`` on any unique key, namespace events for
drop / rename / dropDatabase, Int64 cursor ids in both directions, retryable writes answered once
(``retryable``), and large write batches run in chunks so one slow command cannot stall
every other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from typing import Any, Final

from bson.binary import Binary as BsonBinary
from bson.int64 import Int64
from bson.objectid import ObjectId as BsonObjectId
from mongoeco.api import AsyncMongoClient
from mongoeco.core.aggregation import evaluate_expression
from mongoeco.types import Timestamp
from mongoeco.wire._executor_support import normalize_legacy_query_body
from mongoeco.wire.auth import WireAuthenticationService
from mongoeco.wire.connections import WireConnectionContext, WireConnectionRegistry
from mongoeco.wire.cursors import WireCursorStore
from mongoeco.wire.executor import WireCommandExecutor
from mongoeco.wire.protocol import (
    OP_MSG,
    OP_QUERY,
    decode_op_query,
    encode_op_msg_response,
    encode_op_reply,
    parse_message_header,
)
from mongoeco.wire.surface import WireSurface

from . import brackets, english, errors, expressions, membership, views, write_concern
from .errors import CommandError
from .history import SET_PATHS, History
from .hub import RecordingHub
from .local_sessions import LocalSessions
from .merge import apply_merge, split_merge
from .messages import decode_body
from .out import apply_out, index_specs, out_target, split_out
from .retryable import RetryableWrites
from .rewrite import rewrite_pipeline
from .storage_engine import FastMemoryEngine
from .streams import AGGREGATION_STAGES, ChangeStreams
from .transactions import TransactionSessionStore
from .views import Views

logger = logging.getLogger(__name__)

_MORE_TO_COME: Final = 0x2
_MAX_MESSAGE_BYTES: Final = 48_000_000
# A getMore returns at most this many documents, the first batch by default this many
# (see _CursorStore).
MAX_GET_MORE_DOCUMENTS: Final = 1024
DEFAULT_FIRST_BATCH: Final = 101
# Write batches larger than this run as several engine calls with a yield between them.
WRITE_CHUNK: Final = 100
_BATCH_FIELDS: Final = {"insert": "documents", "update": "updates", "delete": "deletes"}
_HELLO_NAMES: Final = frozenset({"hello", "ismaster", "isMaster"})
_TRANSACTION_ENDS: Final = frozenset({"commitTransaction", "abortTransaction"})
_AUTHENTICATION_COMMANDS: Final = frozenset({"saslStart", "saslContinue", "authenticate"})
# Codes the engine raises with (isolation.py) but mongoeco renders without a codeName.
_OUR_CODES: Final = frozenset({errors.WRITE_CONFLICT, errors.NO_SUCH_TRANSACTION})
# DDL MongoDB refuses inside a transaction (createIndexes only on an existing collection).
_NOT_IN_TRANSACTIONS: Final = frozenset(
    {"drop", "dropDatabase", "renameCollection", "dropIndexes", "collMod"}
)
# Fields any command may carry besides its own options (drivers add them).
_ENGLISH_LOCALES: Final = frozenset(
    {"en_US", "en_GB", "en_AU", "en_CA", "en_IE", "en_IN", "en_NZ", "en_ZA"}
)
_ID_INDEX: Final = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
# Options of a read a view passes on to the aggregation that answers it.
_READ_OPTIONS: Final = frozenset({"let", "collation", "hint"})
# The collection a database-level aggregate runs on: one no client can create.
_NO_COLLECTION: Final = "$cmd.aggregate"
_GENERIC_FIELDS: Final = frozenset(
    {"$db", "lsid", "txnNumber", "$clusterTime", "$readPreference", "writeConcern",
     "readConcern", "comment", "apiVersion", "apiStrict", "apiDeprecationErrors",
     "maxTimeMS", "autocommit", "startTransaction"}
)  # fmt: skip
# What a replacement by an empty document does, as an update pipeline (mongoeco 4.11.0
# rejects an empty update document): only the _id is left.
_EMPTY_REPLACEMENT: Final = [{"$replaceWith": {"_id": "$_id"}}]
# getParameter values a 7.0 replica-set member reports.
_PARAMETERS: Final = {
    "featureCompatibilityVersion": {"version": "7.0"},
    "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
    "requireApiVersion": False,
    # No configureFailPoint and friends: test suites then skip what needs them.
    "enableTestCommands": 0,
}
_ELECTION_ID: Final = BsonObjectId("7fffffff0000000000000001")


class _CursorStore(WireCursorStore):  # type: ignore[misc]
    """mongoeco's cursor store, answering CursorNotFound for unknown ids as MongoDB does,
    with MongoDB's default first batch and getMore batches of at most
    ``MAX_GET_MORE_DOCUMENTS``."""

    def materialize_command_result(
        self, command_document: dict[str, Any], result: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        # mongoeco 4.11.0 returns a whole result in the first batch when the command
        # names no batchSize; MongoDB returns 101 documents and keeps a cursor for the
        # rest (unless singleBatch), and drivers rely on that.
        if self._resolve_batch_size(command_document) is None and not command_document.get(
            "singleBatch"
        ):
            command_document = {**command_document, "batchSize": DEFAULT_FIRST_BATCH}
        reply: dict[str, Any] = super().materialize_command_result(
            command_document, result, **options
        )
        return reply

    def get_more(self, command_document: dict[str, Any], **options: Any) -> dict[str, Any]:
        cursor_id = command_document.get("getMore")
        # mongoeco 4.11.0 keeps open cursors in ``_state`` and answers an empty, closed
        # batch for ids it does not know; drivers rely on error 43 instead.
        if cursor_id not in self._state:
            raise CommandError(errors.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        # Without a batchSize mongoeco returns everything left in one reply, whose
        # encoding then holds the event loop (600 ms for 100 000 documents; 4 096 at a
        # time still made others wait 100 ms). A server may return fewer documents than
        # asked for; MongoDB itself stops at 16 MiB.
        size = command_document.get("batchSize")
        if not isinstance(size, int) or size <= 0 or size > MAX_GET_MORE_DOCUMENTS:
            command_document = {**command_document, "batchSize": MAX_GET_MORE_DOCUMENTS}
        reply: dict[str, Any] = super().get_more(command_document, **options)
        return reply


class EmbeddedMongoServer:
    """A MongoDB-compatible server on one asyncio loop; see the package docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 100_000,
        replica_set: str = "rs0",
        cursor_timeout: float = 600.0,
    ) -> None:
        expressions.install()
        membership.install()
        brackets.install()
        self.host = host
        self.port = port
        self.replica_set = replica_set
        self.history = History(max_events=history_size)
        # No document budget on aggregations (mongoeco 4.11.0 refuses a $group or a count
        # over more than 50 000 documents): MongoDB 6.0+ spills to disk by default.
        self._engine = FastMemoryEngine(aggregation_materialization_limit=None)
        self._client = AsyncMongoClient(self._engine)
        # mongoeco 4.11.0 keeps one change-stream hub per client and hands it to every
        # database and collection it creates; replacing it before first use routes all
        # committed changes into our history.
        self._client._change_hub = RecordingHub(self.history)
        self._surface = WireSurface()
        self._sessions = TransactionSessionStore(self.history)
        self._sessions_seen = LocalSessions()
        self._views = Views()
        # Cursors shown under another namespace: id -> (mongoeco's collection, shown ns).
        self._shown_cursors: dict[int, tuple[str, str]] = {}
        self._executor = WireCommandExecutor(
            self._client,
            _CursorStore(),
            self._sessions,
            surface=self._surface,
            auth=WireAuthenticationService(()),
        )
        self._connections = WireConnectionRegistry()
        self.streams = ChangeStreams(self.history, idle_timeout=cursor_timeout)
        self._retryable = RetryableWrites()
        self._cursor_timeout = cursor_timeout
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._request_ids = 0
        self._address = f"{host}:{port}"

    # -- lifecycle --------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._address

    @property
    def uri(self) -> str:
        return f"mongodb://{self._address}/?replicaSet={self.replica_set}"

    async def start(self) -> None:
        self.history.loop = asyncio.get_running_loop()
        await self._client.__aenter__()
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = f"{host}:{port}"
        self._spawn(self._reap_idle_streams())

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(Exception):
            await self._client.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap_idle_streams(self) -> None:
        interval = max(0.05, min(5.0, self._cursor_timeout / 2))
        while True:
            await asyncio.sleep(interval)
            reaped = self.streams.reap_idle()
            if reaped:
                logger.info("closed %d abandoned change stream(s)", reaped)

    # -- connections ------------------------------------------------------------------
    def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(self._connection_loop(reader, writer))

    async def _connection_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = self._connections.create(writer.get_extra_info("peername"))
        try:
            while True:
                try:
                    raw_header = await reader.readexactly(16)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                header = parse_message_header(raw_header)
                if not 16 < header.message_length <= _MAX_MESSAGE_BYTES:
                    logger.warning("closing connection: invalid message length")
                    return
                payload = await reader.readexactly(header.message_length - 16)
                response = await self._respond(header, payload, connection)
                if response is not None:
                    writer.write(response)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._connections.close(connection)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(
        self, header: Any, payload: bytes, connection: WireConnectionContext
    ) -> bytes | None:
        self._request_ids += 1
        if header.op_code == OP_QUERY:
            request = decode_op_query(header, payload)
            body = normalize_legacy_query_body(
                request.query, number_to_return=request.number_to_return
            )
            db = request.full_collection_name.split(".", 1)[0]
            reply = await self.run_command(body, db, connection)
            encoded: bytes = encode_op_reply(
                [reply], request_id=self._request_ids, response_to=header.request_id
            )
            return encoded
        if header.op_code != OP_MSG:
            error = CommandError(errors.BAD_VALUE, f"unsupported opCode {header.op_code}")
            return _encode(error.to_reply(), self._request_ids, header.request_id)
        flags = int.from_bytes(payload[:4], "little")
        try:
            body = await decode_body(header, payload, self._engine.pacer.breathe)
        except Exception as error:  # malformed message: report, as mongod does
            reply = CommandError(errors.FAILED_TO_PARSE, str(error)).to_reply()
        else:
            reply = await self.run_command(body, str(body.get("$db", "admin")), connection)
        if flags & _MORE_TO_COME:
            return None
        return _encode(reply, self._request_ids, header.request_id)

    # -- commands ---------------------------------------------------------------------
    async def run_command(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        """Run one command and return its reply, errors included."""
        body.pop("$clusterTime", None)
        name = next(iter(body), "")
        self._engine.pacer.command_started()
        lsid = body.get("lsid")
        if isinstance(lsid, dict) and "id" in lsid:
            self._sessions_seen.used(_session_key(lsid), lsid["id"])
        set_paths = SET_PATHS.set(_set_paths(name, body))
        sent, body = body, write_concern.for_engine(body)
        try:
            reply = await self._retryable.run(
                name,
                body,
                _session_key(body.get("lsid")),
                lambda: self._route(name, body, db, connection),
            )
        except CommandError as error:
            reply = error.to_reply()
        except Exception as error:
            reply = self._executor.error_document(error)
            if "code" not in reply and name in _AUTHENTICATION_COMMANDS:
                # mongoeco's refusal carries no code; MongoDB's is 18, which drivers
                # and applications tell apart from an unreachable server.
                reply["code"] = errors.AUTHENTICATION_FAILED
                reply["codeName"] = errors.code_name(errors.AUTHENTICATION_FAILED)
            if "code" not in reply:
                logger.debug("command %s failed", name, exc_info=True)
            elif "codeName" not in reply and reply["code"] in _OUR_CODES:
                reply["codeName"] = errors.code_name(reply["code"])
        finally:
            SET_PATHS.reset(set_paths)
        failed = reply.get("ok") != 1 or bool(reply.get("writeErrors"))
        if failed:
            reply = english.translated(reply)
        if failed and body.get("autocommit") is False and name not in _TRANSACTION_ENDS:
            self._sessions.abort_after_error(body)
            reply = _transient_on_top(reply)
        return self._decorate(write_concern.checked(sent, reply))

    async def _route(
        self, name: str, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        in_transaction = body.get("autocommit") is False
        if in_transaction and "writeConcern" in body and name not in _TRANSACTION_ENDS:
            raise CommandError(
                errors.INVALID_OPTIONS, "Cannot set write concern after starting a transaction."
            )
        if in_transaction and (
            name in _NOT_IN_TRANSACTIONS
            or (name == "createIndexes" and body.get(name) in await self._collection_names(db))
        ):
            raise CommandError(
                errors.NOT_IN_TRANSACTION, f"Cannot run '{name}' in a multi-document transaction."
            )
        if name in _HELLO_NAMES:
            connection.register_hello(name, body)
            return self._hello(name, connection)
        if name == "buildinfo":  # MongoClient.server_info() sends it in lowercase
            body = {"buildInfo": 1, **{k: v for k, v in body.items() if k != name}}
            return await self._passthrough(body, db, connection)
        if name == "getParameter":
            return _get_parameter(body, self._parameters())
        if name == "setParameter":
            return self._set_parameter(body)
        body = _with_evaluated_let(_with_english_collations(body))
        if self._views.is_view(db, body.get(name)) and not views.passes(name):
            return await self._on_view(name, body, db, connection)
        if name == "listCollections":
            reply = await self._passthrough(body, db, connection)
            batch = reply.get("cursor", {}).get("firstBatch")
            if isinstance(batch, list):
                reply["cursor"]["firstBatch"] = [self._listed(db, e) for e in batch]
            return reply
        if name == "update":
            body = _with_empty_replacements(body)
        if name == "createIndexes":
            body = _without_drop_dups(body)
        if name == "listIndexes" and body.get(name) not in await self._collection_names(db):
            # mongoeco lists an _id index for any name; drivers read 26 as "no indexes".
            raise CommandError(errors.NAMESPACE_NOT_FOUND, f"ns does not exist: {db}.{body[name]}")
        if name in ("find", "findAndModify"):
            body = _with_truthy_projection(body, "projection" if name == "find" else "fields")
        if name == "findAndModify" and body.get("update") == {}:
            body = {**body, "update": _EMPTY_REPLACEMENT}
        if name == "aggregate":
            return await self._aggregate(body, db, connection)
        if name == "getMore":
            return await self._get_more(body, db, connection)
        if name == "killCursors":
            return await self._kill_cursors(body, db, connection)
        if name == "endSessions":
            sessions = body.get("endSessions") or []
            self.streams.end_sessions(_session_key(s) for s in sessions)
            self._retryable.end_sessions([_session_key(s) for s in sessions])
            self._sessions_seen.ended(_session_key(s) for s in sessions)
            return await self._passthrough(body, db, connection)
        if name == "drop":
            return await self._drop(body, db, connection)
        if name == "dropDatabase":
            return await self._drop_database(body, db, connection)
        if name == "renameCollection":
            return await self._rename(body, db, connection)
        if name in ("create", "collMod"):
            return await self._create_or_mod(name, body, db, connection)
        if name in ("createIndexes", "dropIndexes"):
            return await self._index_command(name, body, db, connection)
        if name in _BATCH_FIELDS:
            return await self._chunked_write(name, body, db, connection)
        if name == "mongoreactServerStatus":
            return self._status()
        return await self._passthrough(body, db, connection)

    async def _passthrough(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        reply: dict[str, Any] = await self._executor.execute_command(
            body, connection=connection, db_name=db
        )
        return reply

    def _parameters(self) -> dict[str, Any]:
        return {
            **_PARAMETERS,
            "transactionLifetimeLimitSeconds": self._engine.transaction_lifetime_limit_seconds,
        }

    def _set_parameter(self, body: dict[str, Any]) -> dict[str, Any]:
        """``setParameter``: only ``transactionLifetimeLimitSeconds`` can be changed."""
        wanted = {k: v for k, v in body.items() if k != "setParameter" and k not in _GENERIC_FIELDS}
        if set(wanted) != {"transactionLifetimeLimitSeconds"}:
            raise CommandError(
                errors.INVALID_OPTIONS, f"cannot set the parameters {sorted(wanted)}"
            )
        value = wanted["transactionLifetimeLimitSeconds"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CommandError(
                errors.BAD_VALUE, f"transactionLifetimeLimitSeconds must be at least 1: {value!r}"
            )
        was = self._engine.transaction_lifetime_limit_seconds
        self._engine.transaction_lifetime_limit_seconds = value
        return {"was": was, "ok": 1.0}

    def _hello(self, name: str, connection: WireConnectionContext) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.timezone.utc)
        op_time = self.history.clock.now()
        ts = Timestamp(op_time.seconds, op_time.increment)
        surface = self._surface
        reply: dict[str, Any] = {
            "topologyVersion": None,
            "hosts": [self._address],
            "setName": self.replica_set,
            "setVersion": 1,
            "isWritablePrimary" if name == "hello" else "ismaster": True,
            "secondary": False,
            "primary": self._address,
            "me": self._address,
            "electionId": _ELECTION_ID,
            "lastWrite": {
                "opTime": {"ts": ts, "t": Int64(1)},
                "lastWriteDate": now,
                "majorityOpTime": {"ts": ts, "t": Int64(1)},
                "majorityWriteDate": now,
            },
            "maxBsonObjectSize": surface.max_bson_object_size,
            "maxMessageSizeBytes": surface.max_message_size_bytes,
            "maxWriteBatchSize": surface.max_write_batch_size,
            "localTime": now,
            "logicalSessionTimeoutMinutes": surface.logical_session_timeout_minutes,
            "connectionId": connection.connection_id,
            "minWireVersion": 0,
            "maxWireVersion": surface.max_wire_version,
            "readOnly": False,
            "ok": 1.0,
        }
        if name == "hello":
            reply["helloOk"] = True
        # No topologyVersion: drivers then poll hello instead of using the streaming
        # protocol, which this server does not implement.
        del reply["topologyVersion"]
        return reply

    def _decorate(self, reply: dict[str, Any]) -> dict[str, Any]:
        cursor = reply.get("cursor")
        if isinstance(cursor, dict) and "id" in cursor:
            cursor["id"] = Int64(_as_int(cursor["id"]))
        now = self.history.clock.now()
        ts = Timestamp(now.seconds, now.increment)
        reply["operationTime"] = ts
        reply["$clusterTime"] = {
            "clusterTime": ts,
            "signature": {"hash": BsonBinary(bytes(20), 0), "keyId": Int64(0)},
        }
        return reply

    def _status(self) -> dict[str, Any]:
        history = self.history
        lost = history.lost_through
        return {
            "history": {
                "retainedEvents": history.size,
                "firstSeq": history.first_seq,
                "nextSeq": history.next_seq,
                "lostThrough": None if lost is None else Timestamp(lost.seconds, lost.increment),
            },
            "openChangeStreams": self.streams.open_count,
            "connections": len(self._connections),
            "ok": 1.0,
        }

    # -- change streams and cursors ---------------------------------------------------
    async def _aggregate(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        pipeline = body.get("pipeline")
        if (
            isinstance(pipeline, list)
            and pipeline
            and isinstance(pipeline[0], dict)
            and ("$changeStream" in pipeline[0])
        ):
            if body.get("autocommit") is False:
                raise CommandError(
                    errors.NOT_IN_TRANSACTION,
                    "Cannot run a change stream aggregation inside a transaction",
                )
            return self.streams.open(body, db, session_id=_session_key(body.get("lsid")))
        target = body.get("aggregate")
        namespace = f"{db}.{target}" if isinstance(target, str) else f"{db}.$cmd.aggregate"
        if isinstance(pipeline, list):
            for stage in pipeline:
                name = next(iter(stage), None) if isinstance(stage, dict) else None
                if isinstance(name, str) and name not in AGGREGATION_STAGES:
                    raise CommandError(
                        errors.UNRECOGNIZED_STAGE, f"Unrecognized pipeline stage name: '{name}'"
                    )
            pipeline = body["pipeline"] = rewrite_pipeline(pipeline)
            for stage in pipeline[1:]:
                if isinstance(stage, dict) and "$changeStream" in stage:
                    raise CommandError(
                        errors.LOCATION_40602_NOT_FIRST,
                        "$changeStream is only valid as the first stage in a pipeline.",
                    )
            if target == 1:
                body = self._collectionless(body, pipeline)
                pipeline = body["pipeline"]
            merge, out = split_merge(pipeline), split_out(pipeline)
            if (merge or out) is not None and body.get("autocommit") is False:
                raise CommandError(
                    errors.NOT_IN_TRANSACTION,
                    f"{'$merge' if merge is not None else '$out'} cannot be used in a transaction",
                )
            read_concern = body.get("readConcern")
            level = read_concern.get("level") if isinstance(read_concern, dict) else None
            if out is not None and level == "linearizable":
                raise CommandError(
                    errors.INVALID_OPTIONS,
                    "$out cannot be used with a 'linearizable' read concern level",
                )
            if merge is not None or out is not None:
                stages, spec = merge or out  # type: ignore[misc]
                documents = await self._aggregate_all({**body, "pipeline": stages}, db, connection)
                if merge is not None:
                    await apply_merge(self._client, db, documents, spec, self._engine.pacer.breathe)
                else:
                    await apply_out(
                        self._client,
                        out_target(db, spec),
                        documents,
                        functools.partial(self._rename_over, connection=connection),
                    )
                return {"cursor": {"firstBatch": [], "id": 0, "ns": namespace}, "ok": 1.0}
        reply = await self._passthrough(body, db, connection)
        return self._show_cursor(reply, _NO_COLLECTION, namespace) if target == 1 else reply

    def _collectionless(self, body: dict[str, Any], pipeline: list[Any]) -> dict[str, Any]:
        """A database-level ``aggregate`` (``aggregate: 1``) as mongoeco can run it: on a
        collection that does not exist, its first stage producing the documents."""
        first = (
            next(iter(pipeline[0]), None) if pipeline and isinstance(pipeline[0], dict) else None
        )
        if first == "$listLocalSessions":
            pipeline = [{"$documents": self._sessions_seen.listed()}, *pipeline[1:]]
        elif first != "$documents":
            raise CommandError(
                errors.INVALID_NAMESPACE,
                "a database-level aggregate must start with $documents or $listLocalSessions",
            )
        return {**body, "aggregate": _NO_COLLECTION, "pipeline": pipeline}

    async def _on_view(
        self, name: str, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        """A read of a view, as an aggregation of the collection under it."""
        view = str(body[name])
        if name not in views.READS:
            raise views.refused(name, db, view)
        source, pipeline = self._views.resolve(db, view)
        command: dict[str, Any] = {
            "aggregate": source,
            "pipeline": views.as_aggregate(name, body, source, pipeline),
            "cursor": body.get("cursor", {})
            if name == "aggregate"
            else ({"batchSize": body["batchSize"]} if "batchSize" in body else {}),
            **{k: v for k, v in body.items() if k in _GENERIC_FIELDS or k in _READ_OPTIONS},
        }
        if name in ("find", "aggregate"):
            reply = await self._aggregate(command, db, connection)
            return self._show_cursor(reply, source, f"{db}.{view}")
        found = await self._aggregate_all(command, db, connection)
        if name == "count":
            return {"n": found[0]["n"] if found else 0, "ok": 1.0}
        return {"values": [document["_id"] for document in found], "ok": 1.0}

    async def _rename_over(
        self, source: str, target: str, *, connection: WireConnectionContext
    ) -> None:
        reply = await self._rename(
            {"renameCollection": source, "to": target, "dropTarget": True, "$db": "admin"},
            "admin",
            connection,
        )
        if reply.get("ok") != 1:
            raise _reply_error(reply)

    async def _aggregate_all(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> list[dict[str, Any]]:
        command = {**body, "cursor": {"batchSize": 2**31 - 1}}
        reply = await self._passthrough(command, db, connection)
        if reply.get("ok") != 1:
            raise _reply_error(reply)
        cursor = reply["cursor"]
        documents: list[dict[str, Any]] = list(cursor.get("firstBatch", []))
        cursor_id = _as_int(cursor.get("id", 0))
        while cursor_id:
            more = await self._passthrough(
                {"getMore": cursor_id, "collection": cursor["ns"].split(".", 1)[1], "$db": db},
                db,
                connection,
            )
            if more.get("ok") != 1:
                raise _reply_error(more)
            documents.extend(more["cursor"].get("nextBatch", []))
            cursor_id = _as_int(more["cursor"].get("id", 0))
        return documents

    async def _get_more(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        cursor_id = _as_int(body.get("getMore"))
        body["getMore"] = cursor_id
        if cursor_id in self.streams:
            return await self.streams.get_more(body)
        shown = self._shown_cursors.get(cursor_id)
        if shown is None:
            return await self._passthrough(body, db, connection)
        reply = await self._passthrough({**body, "collection": shown[0]}, db, connection)
        cursor = reply.get("cursor")
        if isinstance(cursor, dict):
            cursor["ns"] = shown[1]
            if not _as_int(cursor.get("id", 0)):
                del self._shown_cursors[cursor_id]
        return reply

    def _show_cursor(self, reply: dict[str, Any], source: str, namespace: str) -> dict[str, Any]:
        """Name ``reply``'s cursor ``namespace`` (a view's, or a database's for
        ``aggregate: 1``) though mongoeco runs it on the collection ``source``."""
        cursor = reply.get("cursor")
        if isinstance(cursor, dict):
            cursor["ns"] = namespace
            if _as_int(cursor.get("id", 0)):
                self._shown_cursors[_as_int(cursor["id"])] = (source, namespace)
        return reply

    async def _kill_cursors(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        ids = [_as_int(cursor_id) for cursor_id in body.get("cursors") or []]
        killed, others = self.streams.kill(ids)
        not_found: list[int] = []
        shown = [self._shown_cursors.pop(i) for i in others if i in self._shown_cursors]
        if shown:
            body = {**body, "killCursors": shown[0][0]}
        if others:
            reply = await self._passthrough({**body, "cursors": others}, db, connection)
            if reply.get("ok") != 1:
                return reply
            killed += [_as_int(i) for i in reply.get("cursorsKilled", [])]
            not_found = [_as_int(i) for i in reply.get("cursorsNotFound", [])]
        return {
            "cursorsKilled": [Int64(i) for i in killed],
            "cursorsNotFound": [Int64(i) for i in not_found],
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    # -- namespace commands -----------------------------------------------------------
    def _listed(self, db: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A ``listCollections`` entry as MongoDB gives it: a view's, or a collection's
        with its UUID in ``info`` (a dropped and recreated collection gets a new one)."""
        listed = self._views.listed(db, entry)
        if listed.get("type") == "collection" and isinstance(listed.get("name"), str):
            uuid = self.history.collection_uuid(db, listed["name"])
            listed["info"] = {**(listed.get("info") or {}), "uuid": BsonBinary(uuid.bytes, 4)}
        return listed

    async def _collection_names(self, db: str) -> list[str]:
        names: list[str] = await self._client.get_database(db).list_collection_names()
        return names

    async def _drop(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        coll = str(body["drop"])
        existed = coll in await self._collection_names(db)
        reply = await self._passthrough(body, db, connection)
        if reply.get("ok") == 1 and self._views.is_view(db, coll):
            self._views.forget(db, coll)
        elif reply.get("ok") == 1 and existed:
            self.history.record_drop(db, coll)
        return reply

    async def _drop_database(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        collections = [
            name for name in await self._collection_names(db) if not self._views.is_view(db, name)
        ]
        reply = await self._passthrough(body, db, connection)
        if reply.get("ok") == 1:
            self._views.forget(db)
        if reply.get("ok") == 1 and collections:
            self.history.record_drop_database(db, collections)
        return reply

    async def _rename(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        source, target = str(body.get("renameCollection")), str(body.get("to"))
        if "." not in source or "." not in target:
            raise CommandError(errors.INVALID_NAMESPACE, "renameCollection needs full namespaces")
        from_db, from_coll = source.split(".", 1)
        to_db, to_coll = target.split(".", 1)
        # MongoDB runs renameCollection on admin; mongoeco expects the source database.
        reply = await self._passthrough({**body, "$db": from_db}, from_db, connection)
        if reply.get("ok") == 1:
            self.history.record_rename(from_db, from_coll, to_db, to_coll)
        return reply

    async def _create_or_mod(
        self, name: str, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        images = body.pop("changeStreamPreAndPostImages", None)
        if images is not None and not isinstance(images, dict):
            raise CommandError(errors.BAD_VALUE, "changeStreamPreAndPostImages must be an object")
        options = [key for key in body if key != name and key not in _GENERIC_FIELDS]
        if (
            name == "create"
            and body.get("autocommit") is False
            and str(body.get(name)) in await self._collection_names(db)
        ):
            # Inside a transaction MongoDB refuses to create an existing collection.
            raise CommandError(
                errors.NAMESPACE_EXISTS, f"Collection {db}.{body[name]} already exists."
            )
        if name == "create" and "viewOn" in body and body.get("autocommit") is not False:
            return await self._create_view(body, db, connection)
        coll = str(body[name])
        if name == "collMod" and not options:
            # Only pre- and post-images, or nothing: mongoeco has nothing left to do.
            if coll not in await self._collection_names(db):
                raise CommandError(errors.NAMESPACE_NOT_FOUND, f"ns does not exist: {db}.{coll}")
            reply: dict[str, Any] = {"ok": 1.0}
        else:
            reply = await self._passthrough(body, db, connection)
        if reply.get("ok") != 1:
            return reply
        if images is not None:
            self.history.set_images_enabled(db, coll, bool(images.get("enabled")))
        if name == "create":
            self.history.record_ddl("create", db, coll, {"idIndex": dict(_ID_INDEX)})
        else:
            changed = {key: body[key] for key in options}
            if images is not None:
                changed["changeStreamPreAndPostImages"] = images
            self.history.record_ddl("modify", db, coll, changed)
        return reply

    async def _create_view(
        self, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        reply = await self._passthrough(body, db, connection)
        if reply.get("ok") == 1:
            view, on, pipeline = str(body["create"]), body["viewOn"], body.get("pipeline")
            try:
                self._views.define(db, view, on, pipeline)
            except CommandError:
                await self._passthrough({"drop": view, "$db": db}, db, connection)
                self._views.forget(db, view)
                raise
            self.history.record_ddl("create", db, view, {"viewOn": on, "pipeline": pipeline or []})
        return reply

    async def _index_command(
        self, name: str, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        """``createIndexes`` / ``dropIndexes``, recorded for showExpandedEvents streams
        (with the ``create`` of a collection ``createIndexes`` brings into being)."""
        coll = str(body[name])
        if body.get("autocommit") is False:  # inside a transaction: not recorded
            return await self._passthrough(body, db, connection)
        existed = coll in await self._collection_names(db)
        before = await index_specs(self._client, db, coll) if existed else []
        reply = await self._passthrough(body, db, connection)
        if reply.get("ok") != 1:
            return reply
        after = await index_specs(self._client, db, coll)
        if not existed:
            self.history.record_ddl("create", db, coll, {"idIndex": dict(_ID_INDEX)})
        names = {spec["name"] for spec in after}
        if name == "createIndexes":
            known = {spec["name"] for spec in before}
            made = [spec for spec in after if spec["name"] not in known]
            if made:
                self.history.record_ddl("createIndexes", db, coll, {"indexes": made})
        else:
            gone = [spec for spec in before if spec["name"] not in names]
            if gone:
                self.history.record_ddl("dropIndexes", db, coll, {"indexes": gone})
        return reply

    async def _chunked_write(
        self, name: str, body: dict[str, Any], db: str, connection: WireConnectionContext
    ) -> dict[str, Any]:
        field = _BATCH_FIELDS[name]
        items = body.get(field)
        if not isinstance(items, list) or len(items) <= WRITE_CHUNK:
            return await self._passthrough(body, db, connection)
        ordered = body.get("ordered", True) is not False
        total: dict[str, Any] = {"n": 0, "ok": 1.0}
        write_errors: list[dict[str, Any]] = []
        upserted: list[dict[str, Any]] = []
        for offset in range(0, len(items), WRITE_CHUNK):
            part = {**body, field: items[offset : offset + WRITE_CHUNK]}
            if offset:
                part.pop("startTransaction", None)
            reply = await self._passthrough(part, db, connection)
            if reply.get("ok") != 1:
                return reply
            total["n"] += _as_int(reply.get("n", 0))
            if "nModified" in reply:
                total["nModified"] = total.get("nModified", 0) + _as_int(reply["nModified"])
            upserted += _shift(reply.get("upserted", []), offset)
            write_errors += _shift(reply.get("writeErrors", []), offset)
            if "writeConcernError" in reply:
                total["writeConcernError"] = reply["writeConcernError"]
            if write_errors and ordered:
                break
            # Let other connections run between chunks (as long commands do: pacing.py).
            await self._engine.pacer.breathe()
        if upserted:
            total["upserted"] = upserted
        if write_errors:
            total["writeErrors"] = write_errors
        return total


def _transient_on_top(reply: dict[str, Any]) -> dict[str, Any]:
    """Inside a transaction MongoDB answers a write conflict (or a transaction aborted
    under it) as the command's error, labelled for the driver to retry the transaction;
    mongoeco reports it as a write error of the statement."""
    for write_error in reply.get("writeErrors") or ():
        if write_error.get("code") in (errors.WRITE_CONFLICT, errors.NO_SUCH_TRANSACTION):
            return CommandError(
                write_error["code"],
                write_error.get("errmsg", ""),
                labels=errors.TRANSIENT_TRANSACTION,
            ).to_reply()
    return reply


def _get_parameter(body: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """``getParameter``: the values asked for (``"*"``: all known), as mongod answers."""
    if body.get("getParameter") == "*":
        return {**parameters, "ok": 1.0}
    wanted = [key for key in body if key != "getParameter" and key not in _GENERIC_FIELDS]
    found = {key: parameters[key] for key in wanted if key in parameters}
    if not found:
        raise CommandError(errors.INVALID_OPTIONS, "no option found to get")
    return {**found, "ok": 1.0}


def _set_paths(name: str, body: dict[str, Any]) -> frozenset[str]:
    """The paths the ``$set`` of an update command names (see ``history.SET_PATHS``)."""
    if name == "update" and isinstance(body.get("updates"), list):
        updates = [u.get("u") for u in body["updates"] if isinstance(u, dict)]
    elif name == "findAndModify":
        updates = [body.get("update")]
    else:
        return frozenset()
    return frozenset(
        path
        for update in updates
        if isinstance(update, dict) and isinstance(update.get("$set"), dict)
        for path in update["$set"]
    )


def _english(collation: Any) -> Any:
    if isinstance(collation, dict) and collation.get("locale") in _ENGLISH_LOCALES:
        return {**collation, "locale": "en"}
    return collation


def _with_english_collations(body: dict[str, Any]) -> dict[str, Any]:
    """A command whose English-locale collations name ``"en"``: ICU's ``en_US`` (and
    the other English locales but ``en_US_POSIX``) have no tailoring, so they collate
    exactly as ``en``, the one locale mongoeco 4.11.0 knows besides ``simple``."""
    changed: dict[str, Any] = {}
    if _english(body.get("collation")) is not body.get("collation"):
        changed["collation"] = _english(body["collation"])
    for field in ("updates", "deletes", "indexes"):
        items = body.get(field)
        if isinstance(items, list) and any(
            _english(_collation_of(i)) is not _collation_of(i) for i in items
        ):
            changed[field] = [
                {**item, "collation": _english(item["collation"])}
                if isinstance(item, dict) and "collation" in item
                else item
                for item in items
            ]
    return {**body, **changed} if changed else body


def _collation_of(item: Any) -> Any:
    return item.get("collation") if isinstance(item, dict) else None


def _has_operator(value: Any) -> bool:
    if isinstance(value, dict):
        return any(str(k).startswith("$") or _has_operator(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_operator(item) for item in value)
    return False


def _with_evaluated_let(body: dict[str, Any]) -> dict[str, Any]:
    """A command whose ``let`` values are evaluated: MongoDB evaluates each once, as an
    expression (``{$literal: "$x"}`` is ``"$x"``, ``{$rand: {}}`` a number), where
    mongoeco 4.11.0 takes them as constants."""
    let = body.get("let")
    if not isinstance(let, dict) or not _has_operator(let):
        return body
    return {**body, "let": {name: _evaluated(value) for name, value in let.items()}}


def _evaluated(value: Any) -> Any:
    if not _has_operator(value):
        return value
    try:
        return evaluate_expression({}, value)
    except Exception:  # mongoeco reports what it cannot evaluate, as before
        return value


def _with_empty_replacements(body: dict[str, Any]) -> dict[str, Any]:
    """An ``update`` command whose empty replacement documents are pipelines."""
    updates = body.get("updates")
    if not isinstance(updates, list) or not any(
        isinstance(u, dict) and u.get("u") == {} for u in updates
    ):
        return body
    return {
        **body,
        "updates": [
            {**u, "u": _EMPTY_REPLACEMENT} if isinstance(u, dict) and u.get("u") == {} else u
            for u in updates
        ],
    }


def _encode(reply: dict[str, Any], request_id: int, response_to: int) -> bytes:
    encoded: bytes = encode_op_msg_response(reply, request_id=request_id, response_to=response_to)
    return encoded


def _with_truthy_projection(body: dict[str, Any], field: str) -> dict[str, Any]:
    """``body`` with its projection's numbers other than 0 and 1 read as inclusions, as
    MongoDB reads any non-zero number (mongoeco accepts only 0, 1, true and false)."""
    projection = body.get(field)
    if not isinstance(projection, dict) or not any(map(_other_number, projection.values())):
        return body
    truthy = {k: (1 if _other_number(v) else v) for k, v in projection.items()}
    return {**body, field: truthy}


def _other_number(value: Any) -> bool:
    """A number, not a boolean, other than 0 and 1."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value not in (0, 1)


def _without_drop_dups(body: dict[str, Any]) -> dict[str, Any]:
    """``createIndexes`` without the ``dropDups`` index option, which MongoDB has
    ignored since 3.0 (a unique index over duplicates still fails) and mongoeco refuses."""
    indexes = body.get("indexes")
    if not isinstance(indexes, list) or not any(
        isinstance(spec, dict) and "dropDups" in spec for spec in indexes
    ):
        return body
    kept = [
        {k: v for k, v in spec.items() if k != "dropDups"} if isinstance(spec, dict) else spec
        for spec in indexes
    ]
    return {**body, "indexes": kept}


def _as_int(value: Any) -> int:
    """Cursor ids arrive as Int64 (mongoeco decodes them to a wrapper with ``.value``)."""
    return int(getattr(value, "value", value))


def _shift(entries: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """Per-item results of one chunk, with indexes made relative to the whole batch."""
    return [{**entry, "index": _as_int(entry["index"]) + offset} for entry in entries]


def _session_key(lsid: Any) -> Any:
    if not isinstance(lsid, dict):
        return None
    session_id: Any = lsid.get("id")
    return bytes(session_id.bytes) if hasattr(session_id, "bytes") else repr(session_id)


def _reply_error(reply: dict[str, Any]) -> CommandError:
    return CommandError(int(reply.get("code", 1)), str(reply.get("errmsg", "command failed")))
