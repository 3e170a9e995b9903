"""What mongoreact asks the server itself: its topology and clock (``hello``), and the
change stream the planner reads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import pymongo
from bson import Timestamp
from pymongo import MongoClient
from pymongo.change_stream import DatabaseChangeStream
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

logger = logging.getLogger(__name__)

Document = dict[str, Any]
AUTHENTICATION_FAILED: Final = 18
# While waiting for the server: each try's bound, and how often progress is logged.
_TRY_SECONDS: Final = 1.0
_REPORT_EVERY: Final = 5.0

# The operations planning reacts to; everything else in the stream is filtered out on
# the server.
PLANNED_OPERATIONS: Final = ("insert", "update", "replace", "delete")
# How long a getMore on the change stream waits for events before answering empty.
STREAM_AWAIT_MS: Final = 500


# MongoDB's resume tokens (4.2+) are hex KeyStrings starting with the type byte of a
# Timestamp, 0x82, then the event's cluster time as 8 big-endian bytes.
_TIMESTAMP_TYPE: Final = "82"


def token_time(token: object) -> Timestamp | None:
    """The cluster time a resume token points at (``None`` for a token of another
    format): what the stream has delivered everything before."""
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith(_TIMESTAMP_TYPE):
        return None
    try:
        return Timestamp(int(data[2:10], 16), int(data[10:18], 16))
    except ValueError:
        return None


def last_write_time(database: Database[Document]) -> Timestamp:
    """The cluster time of the last write the primary has applied (``hello``'s
    ``lastWrite``; a mongos answers with its cluster time)."""
    reply = hello(database)
    last = (reply.get("lastWrite") or {}).get("opTime", {}).get("ts")
    if isinstance(last, Timestamp):
        return last
    clock = (reply.get("$clusterTime") or {}).get("clusterTime")
    if isinstance(clock, Timestamp):
        return clock
    # No cluster time at all: a ping's operationTime is the last resort.
    operation: Timestamp = database.client.admin.command("ping")["operationTime"]
    return operation


def ping(client: MongoClient[Document]) -> None:
    """Raise unless the server answers (``ServerSelectionTimeoutError`` when it cannot be
    reached)."""
    client.admin.command("ping")


def hello(database: Database[Document]) -> Document:
    """The server's ``hello`` reply (replica-set name, cluster time, ...)."""
    reply: Document = database.client.admin.command("hello")
    return reply


def stream_pipeline(collections: list[str]) -> list[Document]:
    """Only the operations and collections planning needs, and only ids from them; and
    the events that change a watched collection's contents without a document event:
    a rename onto it (``$out`` does one) or away from it, its drop, the database's
    drop. (An ``invalidate`` always comes through.)"""
    watched = {"$in": collections}
    return [
        {
            "$match": {
                "$or": [
                    {"operationType": {"$in": list(PLANNED_OPERATIONS)}, "ns.coll": watched},
                    {"operationType": "rename", "to.coll": watched},
                    {"operationType": {"$in": ["rename", "drop"]}, "ns.coll": watched},
                    {"operationType": "dropDatabase"},
                ]
            }
        },
        {
            "$project": {
                "operationType": 1,
                "ns": 1,
                "documentKey._id": 1,
                "clusterTime": 1,
                "to": 1,
            }
        },
    ]


def open_change_stream(
    database: Database[Document], collections: list[str], *, start_after: Any, batch_size: int
) -> DatabaseChangeStream[Document]:
    """The planner's change stream on ``collections``, from ``start_after`` (a resume
    token) or from now."""
    return database.watch(
        stream_pipeline(collections),
        start_after=start_after,
        max_await_time_ms=STREAM_AWAIT_MS,
        # Up to a planning batch per round trip, so a burst is read in few getMores.
        batch_size=batch_size,
    )


def error_summary(error: BaseException | str) -> str:
    """A pymongo error's first part, on one line: pymongo appends the whole topology
    description to server-selection errors, and the first part says why."""
    return " ".join(str(error).split(", Topology Description")[0].split())


class ServerWait:
    """What ``wait_for_server`` met: ``None`` (reached), ``"cancelled"``, ``"auth"``
    (credentials refused) or ``"timeout"``, with the last error's first line."""

    def __init__(self, outcome: str | None, reason: str = "") -> None:
        self.outcome = outcome
        self.reason = reason


def wait_for_server(
    client: MongoClient[Document],
    *,
    timeout: float,
    cancelled: threading.Event,
    describe: Callable[[str], str],
) -> ServerWait:
    """Ping the server until it answers, ``timeout`` seconds pass or ``cancelled`` is
    set, each try bounded to a second (``pymongo.timeout`` bounds server selection
    too), so a cancellation is seen at once; progress is logged every 5 s.
    ``describe`` cleans an error message of the URI's secrets."""
    began = time.monotonic()
    reported = began
    reason = ""
    while not cancelled.is_set():
        remaining = timeout - (time.monotonic() - began)
        if remaining <= 0:
            return ServerWait("timeout", reason)
        try:
            with pymongo.timeout(max(0.05, min(_TRY_SECONDS, remaining))):
                client.admin.command("ping")
            return ServerWait(None)
        except OperationFailure as error:
            if error.code == AUTHENTICATION_FAILED:
                return ServerWait("auth", describe(str(error)))
            raise
        except PyMongoError as error:
            reason = describe(error_summary(error))
        now = time.monotonic()
        if now - reported >= _REPORT_EVERY:
            reported = now
            logger.warning(
                "still waiting for MongoDB (%.0fs of %.0fs): %s", now - began, timeout, reason
            )
        cancelled.wait(0.05)  # a refused connection fails at once: do not spin
    return ServerWait("cancelled")
