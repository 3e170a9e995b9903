"""The leader lease: one document (``_id: "leader"``) whose holder leads the cluster."""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs
from pymongo import ReturnDocument
from pymongo.collection import Collection

from ...clock import as_utc
from ...config.durations import to_milliseconds
from ..pipelines import EPOCH, NOW
from .fencing import Document

LEADER_ID: Final = "leader"


@attrs.frozen
class Lease:
    """The leader lease as the server last showed it."""

    holder: str | None
    expires_at: dt.datetime
    epoch: int
    # How many times the lease was taken or renewed by a holder: it only grows, so a
    # holder that reads a count it has seen before knows the document went back (it
    # was restored from a backup) even when it still names it, in its own epoch.
    renewals: int = 0


def _lease(document: Document) -> Lease:
    return Lease(
        holder=document.get("instanceId"),
        expires_at=as_utc(document["expiresAt"]),
        epoch=int(document.get("epoch", 0)),
        renewals=int(document.get("renewals", 0)),
    )


def _acquire_pipeline(instance_id: str, ttl_ms: int) -> list[Document]:
    # Taken or renewed only if free, expired or already ours, judged by the server's
    # clock ($$NOW). The epoch grows on every change of holder, a fencing token for
    # whatever the leader writes. It is at least the server's clock in milliseconds, so
    # it keeps growing when the lease document was deleted or restored from a backup
    # (an epoch counted from 1 again would be refused by every fence for good);
    # ``highest_epoch`` covers a server clock that went back.
    me = {"$literal": instance_id}
    next_epoch = {"$max": [{"$add": [{"$ifNull": ["$epoch", 0]}, 1]}, {"$toLong": NOW}]}
    return [
        {
            "$set": {
                "_ours": {
                    "$or": [
                        {"$eq": ["$instanceId", me]},
                        {"$lt": [{"$ifNull": ["$expiresAt", EPOCH]}, NOW]},
                    ]
                },
                "_new": {"$ne": ["$instanceId", me]},
            }
        },
        {
            "$set": {
                "epoch": {
                    "$cond": [
                        {"$and": ["$_ours", "$_new"]},
                        next_epoch,
                        {"$ifNull": ["$epoch", 0]},
                    ]
                },
                "acquiredAt": {"$cond": [{"$and": ["$_ours", "$_new"]}, NOW, "$acquiredAt"]},
                "instanceId": {"$cond": ["$_ours", me, "$instanceId"]},
                "expiresAt": {"$cond": ["$_ours", {"$add": [NOW, ttl_ms]}, "$expiresAt"]},
                "renewals": {"$add": [{"$ifNull": ["$renewals", 0]}, {"$cond": ["$_ours", 1, 0]}]},
            }
        },
        {"$unset": ["_ours", "_new"]},
    ]


class LeaseStore:
    """Takes, renews, raises and releases the leader lease."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def acquire(self, instance_id: str, ttl: dt.timedelta) -> Lease:
        """Take or renew the leader lease if possible; return the lease either way."""
        document = self._collection.find_one_and_update(
            {"_id": LEADER_ID},
            _acquire_pipeline(instance_id, to_milliseconds(ttl)),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert document is not None  # upsert with ReturnDocument.AFTER
        return _lease(document)

    def highest_epoch(self) -> int:
        """The highest leader epoch any fenced write in the globals collection carries
        (the saved stream position, reconciliation state and checkpoints)."""
        found = self._collection.find_one(
            {"leaderEpoch": {"$type": "number"}}, {"leaderEpoch": 1}, sort=[("leaderEpoch", -1)]
        )
        return int(found["leaderEpoch"]) if found else 0

    def raise_epoch(self, instance_id: str, epoch: int, above: int) -> Lease | None:
        """Move the lease ``instance_id`` holds in ``epoch`` to an epoch above ``above``
        (the lease document was restored or deleted, or the server's clock went back);
        ``None`` if the lease is not in that state any more."""
        # At least the server's clock in ms too, as a new holder's epoch is: ``above``
        # is read from the globals only, and records planned by the leaders in
        # between carry their epochs (``planEpoch``) out of its sight.
        document = self._collection.find_one_and_update(
            {"_id": LEADER_ID, "instanceId": instance_id, "epoch": epoch},
            [{"$set": {"epoch": {"$max": [above + 1, {"$toLong": NOW}]}}}],
            return_document=ReturnDocument.AFTER,
        )
        return None if document is None else _lease(document)

    def release(self, instance_id: str) -> None:
        """Give the lease up now so another instance need not wait for it to expire."""
        self._collection.update_one(
            {"_id": LEADER_ID, "instanceId": instance_id}, {"$set": {"expiresAt": EPOCH}}
        )

    def document(self) -> Document:
        """The leader lease document as stored."""
        return self._collection.find_one({"_id": LEADER_ID}) or {}
