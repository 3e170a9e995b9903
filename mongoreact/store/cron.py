"""The ``_mongoreact_cron`` collection: one document per cron task.

A document holds the task's schedule (as it reads), its next run, the lease of the
instance running it (``lockId``, ``lockedUntil``, renewed while the handler runs), a
``runNow`` request and the last runs (``runLog``, newest first). Lease times are the
server's (``$$NOW``), so instances with skewed clocks agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database

from ..clock import as_utc
from ..config.durations import to_milliseconds
from .pipelines import EPOCH, NOW

Document = dict[str, Any]

CRON_COLLECTION: Final = "_mongoreact_cron"
RUN_LOG_SIZE: Final = 5


class CronStore:
    """Cron task documents of one database."""

    def __init__(self, database: Database[Document]) -> None:
        self._collection = database[CRON_COLLECTION]

    def publish(self, name: str, description: str, next_run: dt.datetime) -> None:
        """Create ``name``'s document; a changed schedule is due again at ``next_run``."""
        self._collection.update_one(
            {"_id": name},
            {"$setOnInsert": {"nextRunAt": next_run, "runLog": [], "lockedUntil": EPOCH,
                              "runNow": False}},
            upsert=True,
        )  # fmt: skip
        self._collection.update_one(
            {"_id": name, "schedule": {"$ne": description}},
            {"$set": {"schedule": description, "nextRunAt": next_run}},
        )

    def next_due(self, names: list[str]) -> dt.datetime | None:
        """The earliest next run of ``names``."""
        upcoming = self._collection.find_one(
            {"_id": {"$in": names}}, {"nextRunAt": 1}, sort=[("nextRunAt", 1)]
        )
        due = (upcoming or {}).get("nextRunAt")
        return as_utc(due) if isinstance(due, dt.datetime) else None

    def claim(
        self, names: list[str], instance_id: str, lease: dt.timedelta
    ) -> tuple[str, ObjectId] | None:
        """Take the lease of one due (or requested) task of ``names`` and open its run
        log entry; its name and the lease id, or ``None``.

        Due and free are judged by the server's clock (``$$NOW``), never by an estimate
        of it: a host whose clock stepped ahead must not take a lease still running."""
        lock_id = ObjectId()
        entry = {"startedAt": NOW, "finishedAt": None, "error": None,
                 "instanceId": {"$literal": instance_id}}  # fmt: skip
        document = self._collection.find_one_and_update(
            {
                "_id": {"$in": names},
                "$expr": {
                    "$and": [
                        {"$lte": ["$lockedUntil", NOW]},
                        {"$or": [{"$lte": ["$nextRunAt", NOW]}, {"$eq": ["$runNow", True]}]},
                    ]
                },
            },
            [{"$set": {
                "lockId": lock_id,
                "lockedUntil": {"$add": [NOW, to_milliseconds(lease)]},
                "runNow": False,
                "runLog": {"$slice": [{"$concatArrays": [[entry], {"$ifNull": ["$runLog", []]}]},
                                      RUN_LOG_SIZE]},
            }}],
            sort=[("runNow", -1), ("nextRunAt", 1)],
            return_document=ReturnDocument.AFTER,
        )  # fmt: skip
        return None if document is None else (document["_id"], lock_id)

    def renew(self, name: str, lock_id: ObjectId, lease: dt.timedelta) -> bool:
        """Extend the lease ``lock_id`` holds; ``False`` if it was lost."""
        result = self._collection.update_one(
            {"_id": name, "lockId": lock_id},
            [{"$set": {"lockedUntil": {"$add": [NOW, to_milliseconds(lease)]}}}],
        )
        return result.matched_count > 0

    def finish(
        self, name: str, lock_id: ObjectId, next_run: dt.datetime, error: str | None
    ) -> bool:
        """Close the run ``lock_id`` started: release the lease, record the outcome;
        whether the lease was still this run's (idempotent: a retry after a lost reply
        finds its own write)."""
        result = self._collection.update_one(
            {"_id": name, "lockId": lock_id},
            {"$set": {"lockedUntil": EPOCH, "nextRunAt": next_run, "runLog.0.error": error},
             "$currentDate": {"runLog.0.finishedAt": True}},
        )  # fmt: skip
        return result.matched_count > 0

    def request_run(self, name: str) -> dt.datetime | None:
        """Ask for a run of ``name`` now; the server time of the request, or ``None`` if
        no such task was ever started."""
        document = self._collection.find_one_and_update(
            {"_id": name}, [{"$set": {"runNow": True, "runRequestedAt": NOW}}],
            return_document=ReturnDocument.AFTER,
        )  # fmt: skip
        return None if document is None else as_utc(document["runRequestedAt"])

    def last_run(self, name: str) -> Document | None:
        """The newest ``runLog`` entry of ``name``."""
        document = self._collection.find_one({"_id": name}, {"runLog": {"$slice": 1}})
        log = (document or {}).get("runLog") or []
        return log[0] if log else None

    def all(self) -> list[Document]:
        """Every cron task document, by name (the dashboard's listing)."""
        return list(self._collection.find({}, sort=[("_id", 1)]))
