"""The globals collection: the leader lease and the planner's stream position."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import attrs
from pymongo import ReturnDocument
from pymongo.database import Database

from ..clock import as_utc
from ..durations import to_milliseconds
from .pipelines import EPOCH, NOW

LEADER_ID: Final = "leader"
PLANNER_ID: Final = "planner"

Document = dict[str, Any]


@attrs.frozen
class Lease:
    """The leader lease as the server last showed it."""

    holder: str | None
    expires_at: dt.datetime
    epoch: int


def _acquire_pipeline(instance_id: str, ttl_ms: int) -> list[Document]:
    # Taken or renewed only if free, expired or already ours, judged by the server's
    # clock ($$NOW). The epoch grows on every change of holder, a fencing token for
    # whatever the leader writes.
    me = {"$literal": instance_id}
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
                        {"$add": [{"$ifNull": ["$epoch", 0]}, 1]},
                        {"$ifNull": ["$epoch", 0]},
                    ]
                },
                "acquiredAt": {"$cond": [{"$and": ["$_ours", "$_new"]}, NOW, "$acquiredAt"]},
                "instanceId": {"$cond": ["$_ours", me, "$instanceId"]},
                "expiresAt": {"$cond": ["$_ours", {"$add": [NOW, ttl_ms]}, "$expiresAt"]},
            }
        },
        {"$unset": ["_ours", "_new"]},
    ]


class GlobalsStore:
    """Coordination documents shared by every instance."""

    def __init__(self, database: Database[Document], collection: str) -> None:
        self._collection = database[collection]

    def acquire_leadership(self, instance_id: str, ttl: dt.timedelta) -> Lease:
        """Take or renew the leader lease if possible; return the lease either way."""
        document = self._collection.find_one_and_update(
            {"_id": LEADER_ID},
            _acquire_pipeline(instance_id, to_milliseconds(ttl)),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert document is not None  # upsert with ReturnDocument.AFTER
        return Lease(
            holder=document.get("instanceId"),
            expires_at=as_utc(document["expiresAt"]),
            epoch=int(document.get("epoch", 0)),
        )

    def release_leadership(self, instance_id: str) -> None:
        """Give the lease up now so another instance need not wait for it to expire."""
        self._collection.update_one(
            {"_id": LEADER_ID, "instanceId": instance_id}, {"$set": {"expiresAt": EPOCH}}
        )

    def load_resume_token(self) -> Document | None:
        """Where the last leader's change stream stopped, if anywhere."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"resumeToken": 1})
        token = document.get("resumeToken") if document else None
        return token if isinstance(token, dict) else None

    def save_resume_token(self, token: Document, instance_id: str) -> None:
        """Remember the stream position after work up to it has been planned."""
        self._collection.update_one(
            {"_id": PLANNER_ID},
            [
                {
                    "$set": {
                        "resumeToken": {"$literal": token},
                        "savedAt": NOW,
                        "savedBy": {"$literal": instance_id},
                    }
                }
            ],
            upsert=True,
        )

    def reconciled_tasks(self) -> list[str]:
        """Names of the tasks whose reconciliation has completed."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"reconciled": 1})
        names = document.get("reconciled") if document else None
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def load_checkpoint(self, collection: str, tasks: list[str]) -> tuple[Any, bool] | None:
        """``(last _id, True)`` of an interrupted reconciliation of exactly ``tasks``."""
        document = self._collection.find_one({"_id": _checkpoint_id(collection)})
        if document is None or document.get("tasks") != tasks or "lastId" not in document:
            return None
        return document["lastId"], True

    def save_checkpoint(self, collection: str, tasks: list[str], last_id: Any) -> None:
        """Record that reconciliation of ``tasks`` has covered ids up to ``last_id``."""
        self._collection.update_one(
            {"_id": _checkpoint_id(collection)},
            [{"$set": {"tasks": {"$literal": tasks}, "lastId": {"$literal": last_id},
                       "updatedAt": NOW}}],
            upsert=True,
        )  # fmt: skip

    def finish_reconciliation(self, collection: str, tasks: list[str]) -> None:
        """Mark ``tasks`` reconciled and drop the collection's checkpoint."""
        self._collection.update_one(
            {"_id": PLANNER_ID},
            {"$addToSet": {"reconciled": {"$each": tasks}}, "$currentDate": {"reconciledAt": True}},
            upsert=True,
        )
        self._collection.delete_one({"_id": _checkpoint_id(collection)})

    def reset_reconciliation(self) -> None:
        """Have every task reconciled again (the change history was lost)."""
        self._collection.update_one({"_id": PLANNER_ID}, {"$unset": {"reconciled": ""}})
        self._collection.delete_many({"_id": {"$regex": "^" + _CHECKPOINT_PREFIX}})

    def publish_spec(self, spec: Document) -> str:
        """Share a task's planning spec. Returns ``"new"``, ``"unchanged"``,
        ``"trigger_changed"``, or ``"older"`` when the stored spec comes from a newer
        ``handler_version`` (then it is kept: during a rolling deploy the newest wins)."""
        key = {"_id": _SPEC_PREFIX + spec["task"]}
        stored = self._collection.find_one(key)
        if stored is not None and int(stored.get("handlerVersion", 1)) > spec["handlerVersion"]:
            self._collection.update_one(key, {"$currentDate": {"seenAt": True}})
            return "older"
        self._collection.update_one(
            key, {"$set": spec, "$currentDate": {"seenAt": True}}, upsert=True
        )
        if stored is None:
            return "new"
        return (
            "unchanged" if stored.get("triggerHash") == spec["triggerHash"] else "trigger_changed"
        )

    def touch_specs(self, tasks: list[str]) -> None:
        """Note that an instance still registers ``tasks``."""
        self._collection.update_many(
            {"_id": {"$in": [_SPEC_PREFIX + t for t in tasks]}}, {"$currentDate": {"seenAt": True}}
        )

    def load_specs(self, seen_since: dt.datetime) -> list[Document]:
        """Specs some instance registered at or after ``seen_since``."""
        query = {"_id": {"$regex": "^" + _SPEC_PREFIX}, "seenAt": {"$gte": seen_since}}
        return list(self._collection.find(query))

    def mark_unreconciled(self, tasks: list[str]) -> None:
        """Have ``tasks`` reconciled again (their trigger changed)."""
        self._collection.update_one({"_id": PLANNER_ID}, {"$pull": {"reconciled": {"$in": tasks}}})

    def forget_resume_token(self) -> None:
        """Drop the stored position (after the server lost the history behind it)."""
        self._collection.update_one({"_id": PLANNER_ID}, {"$unset": {"resumeToken": ""}})


_CHECKPOINT_PREFIX: Final = "reconcile:"
_SPEC_PREFIX: Final = "task:"


def _checkpoint_id(collection: str) -> str:
    return _CHECKPOINT_PREFIX + collection
