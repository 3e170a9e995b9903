"""Each instance's heartbeat and what it says about itself (``instance:<id>``)."""

from __future__ import annotations

import datetime as dt
from typing import Final

from pymongo.collection import Collection

from .fencing import Document

_INSTANCE_PREFIX: Final = "instance:"


class PresenceStore:
    """Instances' heartbeats."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def beat(self, instance_id: str, facts: Document) -> None:
        """Record that ``instance_id`` is alive, with what it says about itself (host,
        pid, leader, what it runs, its counts); the dashboard's instances panel."""
        self._collection.update_one(
            {"_id": _INSTANCE_PREFIX + instance_id},
            {"$set": {"instanceId": instance_id, "facts": facts}, "$currentDate": {"beatAt": True}},
            upsert=True,
        )

    def forget(self, instance_id: str) -> None:
        """Remove ``instance_id``'s heartbeat (it stopped)."""
        self._collection.delete_one({"_id": _INSTANCE_PREFIX + instance_id})

    def instances(self, seen_since: dt.datetime) -> list[Document]:
        """The instances that beat since ``seen_since``: id, facts, last beat."""
        query = {"_id": {"$regex": "^" + _INSTANCE_PREFIX}, "beatAt": {"$gte": seen_since}}
        return list(self._collection.find(query, {"_id": 0}).sort("instanceId", 1))
