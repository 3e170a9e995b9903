"""Cluster-wide pauses of a task (``throttle:<task>``), timed by the server's clock."""

from __future__ import annotations

import datetime as dt
from typing import Final

from pymongo.collection import Collection

from ...clock import as_utc
from ...config.durations import to_milliseconds
from ..pipelines import EPOCH, NOW
from .fencing import Document

_THROTTLE_PREFIX: Final = "throttle:"


class ThrottleStore:
    """Pauses and resumes tasks for the whole cluster."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def pause(self, task: str, duration: dt.timedelta) -> None:
        """Pause ``task`` on every instance until ``duration`` from now (server time);
        an existing longer pause is kept."""
        until = {"$add": [NOW, to_milliseconds(duration)]}
        self._collection.update_one(
            {"_id": _THROTTLE_PREFIX + task},
            [{"$set": {"task": {"$literal": task},
                       "until": {"$max": [{"$ifNull": ["$until", EPOCH]}, until]}}}],
            upsert=True,
        )  # fmt: skip

    def resume(self, task: str) -> int:
        """End a cluster-wide pause of ``task`` now; how many pauses ended."""
        result = self._collection.update_one(
            {"_id": _THROTTLE_PREFIX + task}, {"$set": {"until": EPOCH}}
        )
        return result.modified_count

    def pauses(self) -> dict[str, dt.datetime]:
        """Cluster-wide pauses by task (expired ones included)."""
        query = {"_id": {"$regex": "^" + _THROTTLE_PREFIX}}
        return {
            d["task"]: as_utc(d["until"])
            for d in self._collection.find(query, {"task": 1, "until": 1})
            if isinstance(d.get("until"), dt.datetime)
        }
