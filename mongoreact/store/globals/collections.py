"""The identity (UUID) of each tasks collection as a leader last saw it, so a drop
followed by a re-creation is noticed (``tasks-collection:<name>``)."""

from __future__ import annotations

from typing import Any, Final

from pymongo.collection import Collection

from ..pipelines import NOW
from .fencing import Document, fenced_upsert

_TASKS_COLLECTION_PREFIX: Final = "tasks-collection:"


class TasksCollectionIdStore:
    """The recorded UUID of each tasks collection."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def recorded_uuid(self, tasks_collection: str) -> Any:
        """The UUID ``tasks_collection`` had when a leader last checked it (``None``:
        never recorded). A different UUID now means it was dropped and created again,
        and the records it held went with it."""
        document = self._collection.find_one({"_id": _TASKS_COLLECTION_PREFIX + tasks_collection})
        return document.get("uuid") if document else None

    def record_uuid(self, tasks_collection: str, uuid: Any, *, epoch: int) -> bool:
        """Remember ``tasks_collection``'s current UUID; fenced by the leader ``epoch``
        (``False``: a later leader recorded it, nothing written)."""
        update = [{"$set": {"uuid": {"$literal": uuid}, "leaderEpoch": epoch, "updatedAt": NOW}}]
        key = _TASKS_COLLECTION_PREFIX + tasks_collection
        return fenced_upsert(self._collection, key, {"leaderEpoch": epoch}, update)
