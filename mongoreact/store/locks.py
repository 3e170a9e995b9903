"""The ``_mongoreact_locks`` collection: one document per lock key.

A lock is free when its ``expiresAt`` (the server's clock) has passed. Taking it sets a
new ``lockId`` and increments ``token`` (the fencing token, kept after release: the
document stays); renewing and releasing match the holder's ``lockId``, so a holder whose
lock expired and was taken since can do neither.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database

from ..config.durations import to_milliseconds
from .pipelines import EPOCH, NOW

LOCKS_COLLECTION: Final = "_mongoreact_locks"


def _acquire_pipeline(lock_id: ObjectId, ttl_ms: int) -> list[dict[str, Any]]:
    free = {"$lt": [{"$ifNull": ["$expiresAt", EPOCH]}, NOW]}
    return [
        {"$set": {"_free": free}},
        {
            "$set": {
                "lockId": {"$cond": ["$_free", lock_id, "$lockId"]},
                "expiresAt": {"$cond": ["$_free", {"$add": [NOW, ttl_ms]}, "$expiresAt"]},
                "token": {"$cond": ["$_free", {"$add": [{"$ifNull": ["$token", 0]}, 1]}, "$token"]},
            }
        },
        {"$unset": ["_free"]},
    ]


class LockStore:
    """Lock documents of one database."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self._collection = database[LOCKS_COLLECTION]

    def try_acquire(self, key: str, lock_id: ObjectId, ttl: dt.timedelta) -> int | None:
        """Take ``key`` for ``lock_id`` if it is free; its fencing token, or ``None``."""
        document = self._collection.find_one_and_update(
            {"_id": key},
            _acquire_pipeline(lock_id, to_milliseconds(ttl)),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if document is None or document.get("lockId") != lock_id:
            return None
        return int(document["token"])

    def renew(self, key: str, lock_id: ObjectId, ttl: dt.timedelta) -> bool:
        """Extend the lock; ``False`` if ``lock_id`` no longer holds it."""
        result = self._collection.update_one(
            {"_id": key, "lockId": lock_id},
            [{"$set": {"expiresAt": {"$add": [NOW, to_milliseconds(ttl)]}}}],
        )
        return result.matched_count > 0

    def release(self, key: str, lock_id: ObjectId) -> None:
        """Free the lock if ``lock_id`` still holds it."""
        # Expire rather than delete: the document keeps the fencing counter.
        self._collection.update_one(
            {"_id": key, "lockId": lock_id},
            {"$set": {"expiresAt": EPOCH}, "$unset": {"lockId": ""}},
        )
