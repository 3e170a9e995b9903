"""What mongoreact asks the server itself: its topology and clock (``hello``), and the
change stream the planner reads."""

from __future__ import annotations

from typing import Any, Final

from pymongo.change_stream import DatabaseChangeStream
from pymongo.database import Database

Document = dict[str, Any]

# The operations planning reacts to; everything else in the stream is filtered out on
# the server.
PLANNED_OPERATIONS: Final = ("insert", "update", "replace", "delete")
# How long a getMore on the change stream waits for events before answering empty.
STREAM_AWAIT_MS: Final = 500


def hello(database: Database[Document]) -> Document:
    """The server's ``hello`` reply (replica-set name, cluster time, ...)."""
    reply: Document = database.client.admin.command("hello")
    return reply


def stream_pipeline(collections: list[str]) -> list[Document]:
    """Only the operations and collections planning needs, and only ids from them."""
    return [
        {
            "$match": {
                "operationType": {"$in": list(PLANNED_OPERATIONS)},
                "ns.coll": {"$in": collections},
            }
        },
        {"$project": {"operationType": 1, "ns": 1, "documentKey._id": 1, "clusterTime": 1}},
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
