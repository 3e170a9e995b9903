"""Measurements each instance pushes for the cluster scrape mode (``metrics:<id>``)."""

from __future__ import annotations

import datetime as dt
from typing import Final

from pymongo.collection import Collection

from .fencing import Document

_METRICS_PREFIX: Final = "metrics:"


class MetricsStore:
    """Pushed measurements, per instance."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def push(self, instance_id: str, snapshot: Document) -> None:
        """Store this instance's measurements for the cluster scrape mode."""
        self._collection.update_one(
            {"_id": _METRICS_PREFIX + instance_id},
            {"$set": {"instanceId": instance_id, "measurements": snapshot},
             "$currentDate": {"seenAt": True}},
            upsert=True,
        )  # fmt: skip

    def drop(self, instance_id: str) -> None:
        """Remove this instance's pushed measurements (it stops)."""
        self._collection.delete_one({"_id": _METRICS_PREFIX + instance_id})

    def pushed(self, seen_since: dt.datetime) -> dict[str, Document]:
        """Measurements of the instances heard from since ``seen_since``."""
        query = {"_id": {"$regex": "^" + _METRICS_PREFIX}, "seenAt": {"$gte": seen_since}}
        return {d["instanceId"]: d["measurements"] for d in self._collection.find(query)}
