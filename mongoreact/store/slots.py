"""Cluster-wide concurrency slots (``max_concurrency``), one document per task.

``_id: "slots:<task>"`` holds ``holders: [{id, expiresAt}]``. A worker that claimed a
task with a limit takes a slot in one atomic update that first drops expired holders (a
dead worker's slot frees itself when its lease would have expired); it renews the slot
with the task's lease and gives it back when the run ends.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database

from ..config.durations import to_milliseconds
from . import pipelines

_PREFIX: Final = "slots:"


class SlotStore:
    """Acquire, renew and release concurrency slots."""

    def __init__(self, database: Database[dict[str, Any]], collection: str) -> None:
        self._collection = database[collection]

    def acquire(self, task: str, slot_id: ObjectId, limit: int, lease: dt.timedelta) -> bool:
        """Take a slot of ``task`` if fewer than ``limit`` are held."""
        document = self._collection.find_one_and_update(
            {"_id": _PREFIX + task},
            pipelines.slot_acquire_pipeline(slot_id, limit, to_milliseconds(lease)),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        holders = (document or {}).get("holders", [])
        return any(holder.get("id") == slot_id for holder in holders)

    def renew(self, task: str, slot_ids: list[ObjectId], lease: dt.timedelta) -> None:
        """Extend held slots."""
        self._collection.update_one(
            {"_id": _PREFIX + task}, pipelines.slot_renew_pipeline(slot_ids, to_milliseconds(lease))
        )

    def release(self, task: str, slot_id: ObjectId) -> None:
        """Give a slot back."""
        self._collection.update_one(
            {"_id": _PREFIX + task}, {"$pull": {"holders": {"id": slot_id}}}
        )
