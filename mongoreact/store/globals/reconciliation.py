"""Reconciliation's state: its generation, the tasks reconciled, and the checkpoints
of interrupted scans (``reconcile:<collection>``)."""

from __future__ import annotations

from typing import Any, Final

import attrs
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.collection import Collection

from ..pipelines import NOW
from .fencing import Document, fenced_upsert
from .position import PLANNER_ID

_CHECKPOINT_PREFIX: Final = "reconcile:"


@attrs.frozen(kw_only=True)
class Checkpoint:
    """An interrupted reconciliation: the last ``_id`` it planned, and its scan's id
    (stamped on every record it reached: see ``TaskStore.mark_vanished``)."""

    last_id: Any
    scan_id: ObjectId


def _checkpoint_id(collection: str) -> str:
    return _CHECKPOINT_PREFIX + collection


class ReconciliationStore:
    """Generations, checkpoints and the reconciled tasks, each write fenced by the leader
    epoch."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def reconciled(self) -> list[str]:
        """Reconciliation keys (``specs.reconciliation_key``) of the task definitions
        whose reconciliation has completed."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"reconciled": 1})
        names = document.get("reconciled") if document else None
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def generation(self) -> int:
        """The current reconciliation generation (see ``reset_reconciliation``)."""
        document = self._collection.find_one_and_update(
            {"_id": PLANNER_ID},
            [{"$set": {"reconcileGeneration": {"$ifNull": ["$reconcileGeneration", 0]}}}],
            projection={"reconcileGeneration": 1},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int((document or {}).get("reconcileGeneration", 0))

    def load_checkpoint(
        self, collection: str, tasks: list[str], generation: int
    ) -> Checkpoint | None:
        """Where an interrupted reconciliation of exactly ``tasks`` stopped, if it ran in
        ``generation`` (a checkpoint from before a history loss is worthless)."""
        document = self._collection.find_one({"_id": _checkpoint_id(collection)})
        if (
            document is None
            or document.get("tasks") != tasks
            or document.get("generation") != generation
            or "lastId" not in document
            or not isinstance(document.get("scanId"), ObjectId)
        ):
            return None
        return Checkpoint(last_id=document["lastId"], scan_id=document["scanId"])

    def save_checkpoint(
        self,
        collection: str,
        tasks: list[str],
        last_id: Any,
        scan_id: ObjectId,
        *,
        generation: int,
        epoch: int,
    ) -> bool:
        """Record that reconciliation of ``tasks`` in ``generation`` has covered ids up
        to ``last_id``; fenced by the leader ``epoch`` and the ``generation`` (``False``:
        a later leader's or a later generation's checkpoint is there, nothing written)."""
        update = [
            {
                "$set": {
                    "tasks": {"$literal": tasks},
                    "lastId": {"$literal": last_id},
                    "scanId": scan_id,
                    "generation": generation,
                    "leaderEpoch": epoch,
                    "updatedAt": NOW,
                }
            }
        ]
        fences = {"leaderEpoch": epoch, "generation": generation}
        return fenced_upsert(self._collection, _checkpoint_id(collection), fences, update)

    def finish(self, collection: str, tasks: list[str], generation: int, *, epoch: int) -> bool:
        """Mark ``tasks`` (reconciliation keys) reconciled and drop the collection's
        checkpoint, unless the generation moved on meanwhile or a later leader has
        written its own state (``False``: the scan must start again, or is not ours)."""
        marked = self._collection.update_one(
            {
                "_id": PLANNER_ID,
                "reconcileGeneration": generation,
                "leaderEpoch": {"$not": {"$gt": epoch}},
            },
            {"$addToSet": {"reconciled": {"$each": tasks}}, "$currentDate": {"reconciledAt": True}},
        ).matched_count
        if marked:
            self._collection.delete_one(
                {"_id": _checkpoint_id(collection), "generation": generation, "tasks": tasks}
            )
        return bool(marked)

    def reset(self, *, epoch: int) -> bool:
        """Have every task reconciled again, from the beginning (the change history was
        lost). Starts a new generation: scans of the old one can no longer checkpoint
        usefully or mark anything reconciled. Fenced by the leader ``epoch`` (``False``:
        a later leader owns the planner's state, nothing written)."""
        update: list[Document] = [
            {
                "$set": {
                    "reconcileGeneration": {"$add": [{"$ifNull": ["$reconcileGeneration", 0]}, 1]},
                    "leaderEpoch": {"$max": [{"$ifNull": ["$leaderEpoch", 0]}, epoch]},
                }
            },
            {"$unset": ["reconciled"]},
        ]
        if not fenced_upsert(self._collection, PLANNER_ID, {"leaderEpoch": epoch}, update):
            return False
        self._collection.delete_many(
            {"_id": {"$regex": "^" + _CHECKPOINT_PREFIX}, "leaderEpoch": {"$not": {"$gt": epoch}}}
        )
        return True
