"""When a cleanup last completed anywhere in the cluster (``lastCleanupAt`` on the
planner document)."""

from __future__ import annotations

import datetime as dt

from pymongo.collection import Collection

from .fencing import Document
from .position import PLANNER_ID


class CleanupStateStore:
    """The cleanup schedule's bookkeeping."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def last(self) -> dt.datetime | None:
        """When a cleanup last completed anywhere in the cluster."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"lastCleanupAt": 1})
        value = document.get("lastCleanupAt") if document else None
        return value if isinstance(value, dt.datetime) else None

    def mark_done(self) -> None:
        """Record a completed cleanup (server time)."""
        self._collection.update_one(
            {"_id": PLANNER_ID}, {"$currentDate": {"lastCleanupAt": True}}, upsert=True
        )
