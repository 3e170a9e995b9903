"""Change stream cursors over the wire: ``aggregate`` with ``$changeStream``, ``getMore``
and ``killCursors``, read from :class:`~.history.History`.

Behaviour follows MongoDB 6.0 replica sets: collection, database and cluster streams;
``fullDocument`` and ``fullDocumentBeforeChange`` modes; ``resumeAfter`` / ``startAfter`` /
``startAtOperationTime``; a ``postBatchResumeToken`` on every reply that advances on
empty batches; ``drop`` / ``rename`` / ``dropDatabase`` / ``invalidate`` events; and
``ChangeStreamHistoryLost`` (286) when the resume point fell out of retained history.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import bson
from bson.binary import Binary
from bson.int64 import Int64
from mongoeco.core.aggregation import apply_pipeline
from mongoeco.core.bson_ordering import bson_equality_key
from mongoeco.core.expression_context import execution_now_scope
from mongoeco.types import Timestamp
from mongoeco.wire.bson_bridge import encode_wire_value

from . import errors
from .clock import EVENT, HIGH_WATER, INVALIDATE, ClusterTime, InvalidToken, decode_token
from .errors import CommandError
from .history import ChangeEvent, History

SPLIT_STAGE: Final = "$changeStreamSplitLargeEvent"
# The largest event a stream returns whole (MongoDB's BSONObjMaxUserSize).
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
ALLOWED_STAGES: Final = frozenset(
    {
        "$addFields",
        "$match",
        "$project",
        "$replaceRoot",
        "$replaceWith",
        "$redact",
        "$set",
        "$unset",
    }
)
FULL_DOCUMENT_MODES: Final = frozenset({"default", "updateLookup", "whenAvailable", "required"})
BEFORE_CHANGE_MODES: Final = frozenset({"off", "whenAvailable", "required"})
KNOWN_OPTIONS: Final = frozenset(
    {
        "fullDocument",
        "fullDocumentBeforeChange",
        "resumeAfter",
        "startAfter",
        "startAtOperationTime",
        "allChangesForCluster",
        "showExpandedEvents",
    }
)
# Collections a stream never reports, as on a real server.
_SYSTEM_DATABASES: Final = frozenset({"admin", "config", "local"})
DEFAULT_AWAIT_SECONDS: Final = 1.0
DEFAULT_FIRST_BATCH: Final = 101
# Stop filling a batch near the 16 MiB reply limit (sizes are estimated from the source).
MAX_BATCH_EVENTS: Final = 10_000


@dataclass(frozen=True)
class StreamSpec:
    """A parsed ``$changeStream`` stage plus the stages after it."""

    db: str
    coll: str | None  # None: database stream, or cluster stream when cluster is set
    cluster: bool
    full_document: str
    before_change: str
    stages: list[dict[str, Any]]
    start_after: ClusterTime | None  # resume point: events strictly after this time
    start_at: ClusterTime | None  # startAtOperationTime: events at or after this time
    show_expanded_events: bool = False
    split_large_events: bool = False  # the pipeline ends with $changeStreamSplitLargeEvent
    # Resumed from a fragment's token: that event's fragments up to this one are skipped.
    resume_fragment: tuple[ClusterTime, int] | None = None

    @property
    def namespace(self) -> str:
        """The ``ns`` a cursor reply names, as MongoDB reports it for each scope."""
        if self.cluster:
            return "admin.$cmd.aggregate"
        if self.coll is not None:
            return f"{self.db}.{self.coll}"
        return f"{self.db}.$cmd.aggregate"


@dataclass
class StreamCursor:
    """Server-side state of one open change stream."""

    cursor_id: int
    spec: StreamSpec
    next_seq: int
    resume_token: str
    session_id: Any
    last_used: float = field(default_factory=time.monotonic)
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False
    invalidated: bool = False  # the stream has delivered its invalidate event


# Every aggregation stage MongoDB 7.0 knows: one outside this list is "unrecognized"
# (40324), one in it but not allowed after $changeStream is an illegal operation (20).
AGGREGATION_STAGES: Final = frozenset(
    {"$addFields", "$bucket", "$bucketAuto", "$changeStream", "$changeStreamSplitLargeEvent",
     "$collStats", "$count", "$currentOp", "$densify", "$documents", "$facet", "$fill",
     "$geoNear", "$graphLookup", "$group", "$indexStats", "$limit", "$listLocalSessions",
     "$listSampledQueries", "$listSearchIndexes", "$listSessions", "$lookup", "$match",
     "$merge", "$out", "$planCacheStats", "$project", "$redact", "$replaceRoot",
     "$replaceWith", "$sample", "$search", "$searchMeta", "$set", "$setWindowFields",
     "$shardedDataDistribution", "$skip", "$sort", "$sortByCount", "$unionWith", "$unset",
     "$unwind", "$vectorSearch"}
)  # fmt: skip


def parse_spec(command: dict[str, Any], db: str) -> StreamSpec:
    """Validate a change stream ``aggregate`` command."""
    read_concern = command.get("readConcern")
    level = read_concern.get("level") if isinstance(read_concern, dict) else None
    if level not in (None, "majority"):
        raise CommandError(
            errors.INVALID_OPTIONS,
            "$changeStream cannot run with a readConcern other than 'majority', or in a "
            f"multi-document transaction. Current readConcern: {read_concern}",
        )
    pipeline = command.get("pipeline")
    if not isinstance(pipeline, list) or not pipeline:
        raise CommandError(errors.FAILED_TO_PARSE, "aggregate requires a pipeline")
    first = pipeline[0]
    options = first.get("$changeStream") if isinstance(first, dict) else None
    if not isinstance(options, dict):
        raise CommandError(errors.BAD_VALUE, "$changeStream stage must be an object")
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise CommandError(
            errors.LOCATION_40415_UNKNOWN_FIELD,
            f"BSON field '$changeStream.{name}' is an unknown field.",
        )
    stages = [dict(stage) for stage in pipeline[1:]]
    split = bool(stages) and SPLIT_STAGE in stages[-1]
    if split and stages.pop()[SPLIT_STAGE] != {}:
        raise CommandError(errors.BAD_VALUE, f"{SPLIT_STAGE} takes no options")
    if any(SPLIT_STAGE in stage for stage in stages if isinstance(stage, dict)):
        raise CommandError(
            errors.LOCATION_7182802_SPLIT_NOT_LAST, f"{SPLIT_STAGE} must be the last stage"
        )
    for stage in stages:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(
                errors.FAILED_TO_PARSE,
                "A pipeline stage specification object must contain exactly one field.",
            )
        (name,) = stage
        if name == "$changeStream":
            raise CommandError(
                errors.LOCATION_40602_NOT_FIRST,
                "$changeStream is only valid as the first stage in a pipeline.",
            )
        if name not in ALLOWED_STAGES and name not in AGGREGATION_STAGES:
            raise CommandError(
                errors.UNRECOGNIZED_STAGE, f"Unrecognized pipeline stage name: '{name}'"
            )
        if name not in ALLOWED_STAGES:
            raise CommandError(
                errors.ILLEGAL_OPERATION,
                f"{name} is not permitted in a $changeStream pipeline",
            )

    target = command.get("aggregate")
    cluster = bool(options.get("allChangesForCluster", False))
    if cluster and (target != 1 or db != "admin"):
        raise CommandError(
            errors.INVALID_NAMESPACE,
            "A $changeStream with 'allChangesForCluster:true' may only be opened on the "
            "'admin' database, and with no collection name",
        )
    if target == 1 and db in _SYSTEM_DATABASES and not cluster:
        raise CommandError(
            errors.INVALID_NAMESPACE,
            f"$changeStream may not be opened on the internal {db} database",
        )
    if target != 1 and not isinstance(target, str):
        raise CommandError(errors.BAD_VALUE, "aggregate target must be a name or 1")

    full_document = options.get("fullDocument", "default")
    if full_document not in FULL_DOCUMENT_MODES:
        raise CommandError(
            errors.BAD_VALUE,
            f"unrecognized value for fullDocument: {full_document!r}",
        )
    before_change = options.get("fullDocumentBeforeChange", "off")
    if before_change not in BEFORE_CHANGE_MODES:
        raise CommandError(
            errors.BAD_VALUE,
            f"unrecognized value for fullDocumentBeforeChange: {before_change!r}",
        )

    given = [
        name
        for name in ("resumeAfter", "startAfter", "startAtOperationTime")
        if options.get(name) is not None
    ]
    if len(given) > 1:
        raise CommandError(
            errors.BAD_VALUE, "Only one type of resume option is allowed, but multiple were found."
        )
    start_after: ClusterTime | None = None
    start_at: ClusterTime | None = None
    resume_fragment: tuple[ClusterTime, int] | None = None
    if given and given[0] in ("resumeAfter", "startAfter"):
        token = _decode_resume_token(options[given[0]])
        if token.kind == INVALIDATE and given[0] == "resumeAfter":
            raise CommandError(
                errors.INVALID_RESUME_TOKEN,
                "Attempting to resume a change stream using 'resumeAfter' is not allowed "
                "from an invalidate notification.",
            )
        start_after = token.time
        if token.fragment is not None:
            start_after = token.time.just_before()
            resume_fragment = (token.time, token.fragment)
    elif given:
        value = options["startAtOperationTime"]
        if not isinstance(value, Timestamp):
            raise CommandError(errors.BAD_VALUE, "startAtOperationTime must be a BSON Timestamp")
        start_at = ClusterTime(int(value.time), int(value.inc))

    spec = StreamSpec(
        db=db,
        coll=target if isinstance(target, str) else None,
        cluster=cluster,
        full_document=full_document,
        before_change=before_change,
        stages=stages,
        start_after=start_after,
        start_at=start_at,
        show_expanded_events=options.get("showExpandedEvents") is True,
        split_large_events=split,
        resume_fragment=resume_fragment,
    )
    return spec


def _decode_resume_token(value: object) -> Any:
    data = value.get("_data") if isinstance(value, dict) else None
    try:
        return decode_token(data)
    except InvalidToken as error:
        raise CommandError(errors.INVALID_RESUME_TOKEN, str(error)) from error


class ChangeStreams:
    """All open change stream cursors of the server."""

    def __init__(self, history: History, *, idle_timeout: float) -> None:
        self._history = history
        self._cursors: dict[int, StreamCursor] = {}
        self._idle_timeout = idle_timeout

    def __contains__(self, cursor_id: object) -> bool:
        return cursor_id in self._cursors

    @property
    def open_count(self) -> int:
        return len(self._cursors)

    # -- commands ---------------------------------------------------------------------
    def open(self, command: dict[str, Any], db: str, *, session_id: Any = None) -> dict[str, Any]:
        spec = parse_spec(command, db)
        history = self._history
        if spec.start_after is not None:
            if history.lost_through is not None and spec.start_after < history.lost_through:
                raise errors.history_lost("resume token is older than retained history")
            next_seq = history.seq_after(spec.start_after)
            resume_token = spec.start_after.token(HIGH_WATER)
        elif spec.start_at is not None:
            if history.lost_through is not None and spec.start_at <= history.lost_through:
                raise errors.history_lost("startAtOperationTime is older than retained history")
            next_seq = history.seq_at_or_after(spec.start_at)
            resume_token = spec.start_at.just_before().token(HIGH_WATER)
        else:
            next_seq = history.next_seq
            resume_token = history.clock.now().token(HIGH_WATER)
        cursor = StreamCursor(
            cursor_id=self._new_cursor_id(),
            spec=spec,
            next_seq=next_seq,
            resume_token=resume_token,
            session_id=session_id,
        )
        options = command.get("cursor")
        batch_size = _batch_size(
            options.get("batchSize") if isinstance(options, dict) else None,
            DEFAULT_FIRST_BATCH,
        )
        batch = self._collect(cursor, batch_size) if batch_size else []
        # Known from the event, not the batch: a $project may drop operationType.
        closed = cursor.invalidated
        if not closed:
            self._cursors[cursor.cursor_id] = cursor
        return self._reply(cursor, batch, "firstBatch", closed)

    async def get_more(self, command: dict[str, Any]) -> dict[str, Any]:
        cursor_id = int(command["getMore"])
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(errors.CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        batch_size = _batch_size(command.get("batchSize"), MAX_BATCH_EVENTS) or MAX_BATCH_EVENTS
        max_time = command.get("maxTimeMS")
        wait = DEFAULT_AWAIT_SECONDS if max_time is None else max(0, int(max_time)) / 1000
        deadline = time.monotonic() + wait
        cursor.busy = True
        try:
            while True:
                self._raise_if_killed(cursor)
                batch = self._collect(cursor, batch_size)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    break
                waiter = asyncio.ensure_future(
                    self._history.wait_for_event(cursor.next_seq, remaining)
                )
                killed = asyncio.ensure_future(cursor.killed.wait())
                await asyncio.wait({waiter, killed}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                killed.cancel()
        except Exception:
            # Any failure - history lost, killed, or an event the stage pipeline cannot
            # evaluate - ends the stream, as on MongoDB.
            self._cursors.pop(cursor_id, None)
            raise
        finally:
            cursor.busy = False
            cursor.last_used = time.monotonic()
        closed = cursor.invalidated
        if closed:
            self._cursors.pop(cursor_id, None)
        return self._reply(cursor, batch, "nextBatch", closed)

    def kill(self, cursor_ids: Iterable[int]) -> tuple[list[int], list[int]]:
        killed, not_found = [], []
        for cursor_id in cursor_ids:
            cursor = self._cursors.pop(cursor_id, None)
            if cursor is None:
                not_found.append(cursor_id)
            else:
                cursor.killed.set()
                killed.append(cursor_id)
        return killed, not_found

    def end_sessions(self, session_ids: Iterable[Any]) -> None:
        ended = set(session_ids)
        self.kill([c.cursor_id for c in self._cursors.values() if c.session_id in ended])

    def reap_idle(self) -> int:
        """Kill streams nobody has read for ``idle_timeout`` seconds (abandoned clients)."""
        limit = time.monotonic() - self._idle_timeout
        stale = [c.cursor_id for c in self._cursors.values() if not c.busy and c.last_used < limit]
        self.kill(stale)
        return len(stale)

    # -- internals --------------------------------------------------------------------
    def _new_cursor_id(self) -> int:
        # High ids never collide with mongoeco's small sequential cursor ids.
        while True:
            cursor_id = secrets.randbits(62) | (1 << 61)
            if cursor_id not in self._cursors:
                return cursor_id

    @staticmethod
    def _raise_if_killed(cursor: StreamCursor) -> None:
        if cursor.killed.is_set():
            raise CommandError(errors.CURSOR_KILLED, f"cursor id {cursor.cursor_id} was killed")

    def _collect(self, cursor: StreamCursor, limit: int) -> list[dict[str, Any]]:
        history = self._history
        if history.lost_through is not None and cursor.next_seq < history.first_seq:
            raise errors.history_lost("the stream fell behind retained history")
        batch: list[dict[str, Any]] = []
        now = datetime.datetime.now(datetime.timezone.utc)
        scanned_to_end = True
        batch_bytes = 0  # counted only by streams that split large events
        for event in history.events_from(cursor.next_seq):
            if len(batch) >= limit or batch_bytes > MAX_EVENT_BYTES:
                scanned_to_end = False
                break
            cursor.next_seq = event.seq + 1
            cursor.resume_token = event.time.token(EVENT)
            for document in self._render(cursor.spec, event):
                output = self._apply_stages(cursor.spec, document, now)
                if output is not None and cursor.spec.split_large_events:
                    pieces = _fragments(cursor.spec, event.time, output)
                    batch += pieces
                    batch_bytes += sum(_bson_size(piece) for piece in pieces)
                elif output is not None:
                    batch.append(output)
                if document["operationType"] == "invalidate":
                    cursor.invalidated = True
                    cursor.resume_token = document["_id"]["_data"]
                    return batch if output is not None else [*batch, document]
        if scanned_to_end:
            cursor.resume_token = history.clock.now().token(HIGH_WATER)
        return batch

    def _apply_stages(
        self, spec: StreamSpec, document: dict[str, Any], now: datetime.datetime
    ) -> dict[str, Any] | None:
        if not spec.stages:
            return document
        with execution_now_scope(now):
            result = apply_pipeline([document], spec.stages)
        if not result:
            return None
        output: dict[str, Any] = result[0]
        if output.get("_id") != document["_id"]:
            raise CommandError(
                errors.CHANGE_STREAM_FATAL,
                "Encountered an event whose _id field, which contains the resume token, "
                "was modified by the pipeline. Modifying the _id field of an event makes it "
                "impossible to resume the stream from that point. Only transformations that "
                "retain the unmodified _id field are allowed.",
                labels=("NonResumableChangeStreamError",),
            )
        return output

    def _render(self, spec: StreamSpec, event: ChangeEvent) -> list[dict[str, Any]]:
        """The documents ``event`` produces on this stream (none, one, or event+invalidate)."""
        if event.db in _SYSTEM_DATABASES or (event.coll or "").startswith("system."):
            return []
        if event.expanded and not spec.show_expanded_events:
            return []
        if spec.cluster:
            return [self._document(spec, event)]
        if event.db != spec.db:
            # A rename into the watched namespace from another database still invalidates.
            if spec.coll is not None and event.to == {"db": spec.db, "coll": spec.coll}:
                return [self._invalidate(event)]
            return []
        if spec.coll is None:  # database stream
            if event.operation_type == "dropDatabase":
                return [self._document(spec, event), self._invalidate(event)]
            return [self._document(spec, event)]
        if event.operation_type == "rename" and event.to == {"db": spec.db, "coll": spec.coll}:
            return [self._invalidate(event)]
        if event.coll != spec.coll:
            return []
        if event.operation_type in ("drop", "rename"):
            return [self._document(spec, event), self._invalidate(event)]
        return [self._document(spec, event)]

    @staticmethod
    def _invalidate(event: ChangeEvent) -> dict[str, Any]:
        return {
            "_id": {"_data": event.time.token(INVALIDATE)},
            "operationType": "invalidate",
            "clusterTime": Timestamp(event.time.seconds, event.time.increment),
            "wallTime": event.wall_time,
        }

    def _document(self, spec: StreamSpec, event: ChangeEvent) -> dict[str, Any]:
        document: dict[str, Any] = {
            "_id": {"_data": event.time.token(EVENT)},
            "operationType": event.operation_type,
            "clusterTime": Timestamp(event.time.seconds, event.time.increment),
            "wallTime": event.wall_time,
        }
        full = self._full_document(spec, event)
        if full is not _ABSENT:
            document["fullDocument"] = full
        ns: dict[str, Any] = {"db": event.db}
        if event.coll is not None:
            ns["coll"] = event.coll
        document["ns"] = ns
        if event.to is not None:
            document["to"] = dict(event.to)
        if event.document_key is not None:
            document["documentKey"] = event.document_key
        if event.update_description is not None:
            document["updateDescription"] = event.update_description
            if spec.show_expanded_events:
                document["updateDescription"] = {
                    **event.update_description,
                    "disambiguatedPaths": dict(event.disambiguated_paths or {}),
                }
        if spec.show_expanded_events:
            if event.collection_uuid is not None:
                document["collectionUUID"] = Binary.from_uuid(event.collection_uuid)
            if event.operation_description is not None:
                document["operationDescription"] = _with_binary_uuids(event.operation_description)
        if event.lsid is not None and event.txn_number is not None:
            document["lsid"] = event.lsid
            document["txnNumber"] = Int64(event.txn_number)
        before = self._before_change(spec, event)
        if before is not _ABSENT:
            document["fullDocumentBeforeChange"] = before
        return document

    def _full_document(self, spec: StreamSpec, event: ChangeEvent) -> Any:
        if event.operation_type in ("insert", "replace"):
            return event.full_document
        if event.operation_type != "update":
            return _ABSENT
        mode = spec.full_document
        if mode == "default":
            return _ABSENT
        if mode == "updateLookup":
            key = bson_equality_key((event.document_key or {}).get("_id"))
            return self._history.lookup(event.db, event.coll or "", key)
        if event.post_image is None and mode == "required":
            raise CommandError(
                errors.NO_MATCHING_DOCUMENT,
                f"Change stream was configured to require a post-image for all update events, "
                f"but the post-image was not found for event on {event.db}.{event.coll}",
            )
        return event.post_image

    @staticmethod
    def _before_change(spec: StreamSpec, event: ChangeEvent) -> Any:
        if spec.before_change == "off" or event.operation_type not in (
            "update",
            "replace",
            "delete",
        ):
            return _ABSENT
        if event.pre_image is None and spec.before_change == "required":
            raise CommandError(
                errors.NO_MATCHING_DOCUMENT,
                f"Change stream was configured to require a pre-image for all update, "
                f"delete and replace events, but the pre-image was not found for event on "
                f"{event.db}.{event.coll}",
            )
        return event.pre_image

    def _reply(
        self, cursor: StreamCursor, batch: list[dict[str, Any]], key: str, closed: bool
    ) -> dict[str, Any]:
        return {
            "cursor": {
                key: batch,
                "postBatchResumeToken": {"_data": cursor.resume_token},
                "id": Int64(0 if closed else cursor.cursor_id),
                "ns": cursor.spec.namespace,
            },
            "ok": 1.0,
        }


_ABSENT: Final = object()


def _batch_size(value: object, default: int) -> int:
    """A requested batch size, capped; ``default`` when none was given."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CommandError(errors.BAD_VALUE, f"batchSize must be a non-negative integer: {value!r}")
    return min(int(value), MAX_BATCH_EVENTS)


def _with_binary_uuids(value: Any) -> Any:
    """``value`` with its UUIDs as BSON binaries (subtype 4), as the server sends them."""
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value)
    if isinstance(value, dict):
        return {key: _with_binary_uuids(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_binary_uuids(item) for item in value]
    return value


def _fragments(spec: StreamSpec, time: ClusterTime, event: dict[str, Any]) -> list[dict[str, Any]]:
    """``event`` whole if it fits in 16 MiB, else the fragments
    ``$changeStreamSplitLargeEvent`` makes of it: its top-level fields in order, as few
    to a fragment as fit, each fragment with its own resume token and ``splitEvent``."""
    if _bson_size(event) <= MAX_EVENT_BYTES:
        return [event]
    frame = {"_id": {"_data": time.fragment_token(1)}, "splitEvent": {"fragment": 1, "of": 1}}
    overhead = _bson_size(frame)
    parts: list[dict[str, Any]] = [{}]
    size = overhead
    for key, value in event.items():
        if key == "_id":
            continue
        field_size = _bson_size({key: value}) - 5  # without the document's frame
        if overhead + field_size > MAX_EVENT_BYTES:
            raise CommandError(
                errors.BSON_OBJECT_TOO_LARGE,
                f"field {key!r} of a change event alone exceeds {MAX_EVENT_BYTES} bytes",
            )
        if parts[-1] and size + field_size > MAX_EVENT_BYTES:
            parts.append({})
            size = overhead
        parts[-1][key] = value
        size += field_size
    skip = 0
    if spec.resume_fragment is not None and spec.resume_fragment[0] == time:
        skip = spec.resume_fragment[1]
    return [
        {"_id": {"_data": time.fragment_token(number)},
         "splitEvent": {"fragment": number, "of": len(parts)}, **part}
        for number, part in enumerate(parts, start=1)
        if number > skip
    ]  # fmt: skip


def _bson_size(document: dict[str, Any]) -> int:
    """Bytes ``document`` takes on the wire (mongoeco's values included)."""
    return len(bson.encode(encode_wire_value(document)))
