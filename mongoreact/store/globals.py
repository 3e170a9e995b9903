"""The globals collection: the leader lease and the planner's stream position."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import attrs
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..clock import as_utc
from ..config.durations import to_milliseconds
from .pipelines import EPOCH, NOW
from .server import token_time

LEADER_ID: Final = "leader"
PLANNER_ID: Final = "planner"

Document = dict[str, Any]


@attrs.frozen(kw_only=True)
class Checkpoint:
    """An interrupted reconciliation: the last ``_id`` it planned, and its scan's id
    (stamped on every record it reached: see ``TaskStore.mark_vanished``)."""

    last_id: Any
    scan_id: ObjectId


@attrs.frozen(kw_only=True)
class Publication:
    """What publishing a task spec found: a first publication, a trigger that changed,
    a handler version this instance moved up (``upgraded``: apply its evolution policy
    once), or a newer version already published (``older``)."""

    new: bool = False
    trigger_changed: bool = False
    upgraded: bool = False
    older: bool = False
    # The stored spec document, when this spec became it (with its server-time
    # ``publishedAt``); None if it did not.
    stored: Document | None = None

    @property
    def published_at(self) -> dt.datetime | None:
        """When this spec became the stored one (server time)."""
        at = (self.stored or {}).get("publishedAt")
        return as_utc(at) if isinstance(at, dt.datetime) else None


@attrs.frozen
class Lease:
    """The leader lease as the server last showed it."""

    holder: str | None
    expires_at: dt.datetime
    epoch: int


def _lease(document: Document) -> Lease:
    return Lease(
        holder=document.get("instanceId"),
        expires_at=as_utc(document["expiresAt"]),
        epoch=int(document.get("epoch", 0)),
    )


def _acquire_pipeline(instance_id: str, ttl_ms: int) -> list[Document]:
    # Taken or renewed only if free, expired or already ours, judged by the server's
    # clock ($$NOW). The epoch grows on every change of holder, a fencing token for
    # whatever the leader writes. It is at least the server's clock in milliseconds, so
    # it keeps growing when the lease document was deleted or restored from a backup
    # (an epoch counted from 1 again would be refused by every fence for good);
    # ``highest_epoch`` covers a server clock that went back.
    me = {"$literal": instance_id}
    next_epoch = {"$max": [{"$add": [{"$ifNull": ["$epoch", 0]}, 1]}, {"$toLong": NOW}]}
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
                        next_epoch,
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
        return _lease(document)

    def highest_epoch(self) -> int:
        """The highest leader epoch any fenced write in the globals collection carries
        (the saved stream position, reconciliation state and checkpoints)."""
        found = self._collection.find_one(
            {"leaderEpoch": {"$type": "number"}}, {"leaderEpoch": 1}, sort=[("leaderEpoch", -1)]
        )
        return int(found["leaderEpoch"]) if found else 0

    def raise_epoch(self, instance_id: str, epoch: int, above: int) -> Lease | None:
        """Move the lease ``instance_id`` holds in ``epoch`` to an epoch above ``above``
        (the lease document was restored or deleted, or the server's clock went back);
        ``None`` if the lease is not in that state any more."""
        document = self._collection.find_one_and_update(
            {"_id": LEADER_ID, "instanceId": instance_id, "epoch": epoch},
            {"$set": {"epoch": above + 1}},
            return_document=ReturnDocument.AFTER,
        )
        return None if document is None else _lease(document)

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

    def save_resume_token(
        self,
        token: Document,
        instance_id: str,
        position_at: dt.datetime | None = None,
        *,
        epoch: int,
    ) -> bool:
        """Remember the stream position after work up to it has been planned;
        ``position_at`` is when its last event happened (``None``: caught up, now).

        Fenced by the leader ``epoch``: ``False`` (nothing written) once a later leader
        has saved a position, so a deposed leader cannot move the position back.
        """
        update = [
            {
                "$set": {
                    "resumeToken": {"$literal": token},
                    "savedAt": NOW,
                    "streamPositionAt": position_at or NOW,
                    # The cluster time before which every change has been planned.
                    "streamTime": {"$literal": token_time(token)},
                    "savedBy": {"$literal": instance_id},
                    "leaderEpoch": epoch,
                }
            }
        ]
        return self._fenced_upsert(PLANNER_ID, {"leaderEpoch": epoch}, update)

    def _fenced_upsert(self, key: str, fences: dict[str, int], update: list[Document]) -> bool:
        """Apply ``update`` to document ``key`` (creating it) unless one of its
        ``fences`` fields holds a later value than given; whether it was applied."""
        query: Document = {"_id": key}
        query.update((field, {"$not": {"$gt": value}}) for field, value in fences.items())
        try:
            self._collection.update_one(query, update, upsert=True)
            return True
        except DuplicateKeyError:
            # The document exists with a later epoch (the upsert then tries to insert
            # the key again), or two upserts raced: one plain try tells which.
            return self._collection.update_one(query, update).matched_count == 1

    def reconciled_tasks(self) -> list[str]:
        """Reconciliation keys (``specs.reconciliation_key``) of the task definitions
        whose reconciliation has completed."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"reconciled": 1})
        names = document.get("reconciled") if document else None
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def reconciliation_generation(self) -> int:
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
        return self._fenced_upsert(_checkpoint_id(collection), fences, update)

    def finish_reconciliation(
        self, collection: str, tasks: list[str], generation: int, *, epoch: int
    ) -> bool:
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

    def reset_reconciliation(self, *, epoch: int) -> bool:
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
        if not self._fenced_upsert(PLANNER_ID, {"leaderEpoch": epoch}, update):
            return False
        self._collection.delete_many(
            {"_id": {"$regex": "^" + _CHECKPOINT_PREFIX}, "leaderEpoch": {"$not": {"$gt": epoch}}}
        )
        return True

    def tasks_collection_uuid(self, tasks_collection: str) -> Any:
        """The UUID ``tasks_collection`` had when a leader last checked it (``None``:
        never recorded). A different UUID now means it was dropped and created again,
        and the records it held went with it."""
        document = self._collection.find_one({"_id": _TASKS_COLLECTION_PREFIX + tasks_collection})
        return document.get("uuid") if document else None

    def record_tasks_collection_uuid(self, tasks_collection: str, uuid: Any, *, epoch: int) -> bool:
        """Remember ``tasks_collection``'s current UUID; fenced by the leader ``epoch``
        (``False``: a later leader recorded it, nothing written)."""
        update = [{"$set": {"uuid": {"$literal": uuid}, "leaderEpoch": epoch, "updatedAt": NOW}}]
        key = _TASKS_COLLECTION_PREFIX + tasks_collection
        return self._fenced_upsert(key, {"leaderEpoch": epoch}, update)

    def enter_epoch(self, epoch: int) -> bool:
        """Stamp the planner's state with a new leader ``epoch`` when its term begins,
        so that from then on every fenced write of an older leader is refused, even
        before this one has saved anything; ``False`` if a later epoch is there."""
        update = [{"$set": {"leaderEpoch": {"$max": [{"$ifNull": ["$leaderEpoch", 0]}, epoch]}}}]
        return self._fenced_upsert(PLANNER_ID, {"leaderEpoch": epoch}, update)

    def publish_spec(self, spec: Document) -> Publication:
        """Share a task's planning spec (see ``Publication`` for what happened).

        A stored spec from a newer ``handler_version`` is kept: during a rolling deploy
        the newest wins. A newer local version replaces the stored one with a
        compare-and-set, so exactly one instance sees ``upgraded`` per version change.
        """
        key = {"_id": _SPEC_PREFIX + spec["task"]}
        now = {"seenAt": True, "publishedAt": True}
        first = self._collection.update_one(
            key, {"$setOnInsert": spec, "$currentDate": {"seenAt": True}}, upsert=True
        )
        if first.upserted_id is not None:
            self._collection.update_one(key, {"$currentDate": now})
            return Publication(new=True, stored=self._collection.find_one(key))
        stored = self._collection.find_one(key) or {}
        mine = spec["handlerVersion"]
        theirs = int(stored.get("handlerVersion", 1))
        if theirs > mine:
            self._collection.update_one(key, {"$currentDate": {"seenAt": True}})
            return Publication(older=True)
        won = self._collection.update_one(
            {**key, "handlerVersion": stored.get("handlerVersion")},
            {"$set": spec, "$currentDate": now},
        ).modified_count
        return Publication(
            trigger_changed=stored.get("triggerHash") != spec["triggerHash"],
            upgraded=bool(won) and theirs < mine,
            stored=self._collection.find_one(key) if won else None,
        )

    def restore_spec(self, newer: Document, stored: Document) -> bool:
        """Put back ``newer`` (a spec document as read earlier) in place of ``stored``
        (an older one a restore brought back), unless it changed again meanwhile."""
        key = {"_id": newer["_id"], "publishedAt": stored.get("publishedAt")}
        return self._collection.replace_one(key, newer).matched_count > 0

    def stored_specs(self, tasks: list[str]) -> dict[str, Document]:
        """The published specs of ``tasks`` (version, trigger, when), by task name."""
        query = {"_id": {"$in": [_SPEC_PREFIX + t for t in tasks]}}
        fields = {"task": 1, "handlerVersion": 1, "triggerHash": 1, "publishedAt": 1}
        return {d["task"]: d for d in self._collection.find(query, fields)}

    def touch_specs(self, tasks: list[str]) -> int:
        """Note that an instance still registers ``tasks``; how many were found."""
        return self._collection.update_many(
            {"_id": {"$in": [_SPEC_PREFIX + t for t in tasks]}}, {"$currentDate": {"seenAt": True}}
        ).matched_count

    def load_specs(self, seen_since: dt.datetime) -> list[Document]:
        """Specs some instance registered at or after ``seen_since``."""
        query = {"_id": {"$regex": "^" + _SPEC_PREFIX}, "seenAt": {"$gte": seen_since}}
        return list(self._collection.find(query))

    def last_cleanup(self) -> dt.datetime | None:
        """When a cleanup last completed anywhere in the cluster."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"lastCleanupAt": 1})
        value = document.get("lastCleanupAt") if document else None
        return value if isinstance(value, dt.datetime) else None

    def mark_cleanup_done(self) -> None:
        """Record a completed cleanup (server time)."""
        self._collection.update_one(
            {"_id": PLANNER_ID}, {"$currentDate": {"lastCleanupAt": True}}, upsert=True
        )

    def throttle(self, task: str, duration: dt.timedelta) -> None:
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

    def throttles(self) -> dict[str, dt.datetime]:
        """Cluster-wide pauses by task (expired ones included)."""
        query = {"_id": {"$regex": "^" + _THROTTLE_PREFIX}}
        return {
            d["task"]: as_utc(d["until"])
            for d in self._collection.find(query, {"task": 1, "until": 1})
            if isinstance(d.get("until"), dt.datetime)
        }

    def push_metrics(self, instance_id: str, snapshot: Document) -> None:
        """Store this instance's measurements for the cluster scrape mode."""
        self._collection.update_one(
            {"_id": _METRICS_PREFIX + instance_id},
            {"$set": {"instanceId": instance_id, "measurements": snapshot},
             "$currentDate": {"seenAt": True}},
            upsert=True,
        )  # fmt: skip

    def beat(self, instance_id: str, facts: Document) -> None:
        """Record that ``instance_id`` is alive, with what it says about itself (host,
        pid, leader, what it runs, its counts); the dashboard's instances panel."""
        self._collection.update_one(
            {"_id": _INSTANCE_PREFIX + instance_id},
            {"$set": {"instanceId": instance_id, "facts": facts}, "$currentDate": {"beatAt": True}},
            upsert=True,
        )

    def forget_instance(self, instance_id: str) -> None:
        """Remove ``instance_id``'s heartbeat (it stopped)."""
        self._collection.delete_one({"_id": _INSTANCE_PREFIX + instance_id})

    def instances(self, seen_since: dt.datetime) -> list[Document]:
        """The instances that beat since ``seen_since``: id, facts, last beat."""
        query = {"_id": {"$regex": "^" + _INSTANCE_PREFIX}, "beatAt": {"$gte": seen_since}}
        return list(self._collection.find(query, {"_id": 0}).sort("instanceId", 1))

    def drop_metrics(self, instance_id: str) -> None:
        """Remove this instance's pushed measurements (it stops)."""
        self._collection.delete_one({"_id": _METRICS_PREFIX + instance_id})

    def pushed_metrics(self, seen_since: dt.datetime) -> dict[str, Document]:
        """Measurements of the instances heard from since ``seen_since``."""
        query = {"_id": {"$regex": "^" + _METRICS_PREFIX}, "seenAt": {"$gte": seen_since}}
        return {d["instanceId"]: d["measurements"] for d in self._collection.find(query)}

    def published_task_collections(self) -> dict[str, str]:
        """Task name -> source collection, from the definitions instances published."""
        query = {"_id": {"$regex": "^" + _SPEC_PREFIX}}
        return {
            spec["task"]: spec["collection"]
            for spec in self._collection.find(query, {"task": 1, "collection": 1})
        }

    def leader_lease(self) -> Document:
        """The leader lease document as stored."""
        return self._collection.find_one({"_id": LEADER_ID}) or {}

    def planner_state(self) -> Document:
        """The planner document (stream position, reconciliation, cleanup)."""
        return self._collection.find_one({"_id": PLANNER_ID}) or {}

    def forget_resume_token(self, *, epoch: int) -> bool:
        """Drop the stored position (after the server lost the history behind it);
        fenced by the leader ``epoch`` (``False``: a later leader's state, kept)."""
        result = self._collection.update_one(
            {"_id": PLANNER_ID, "leaderEpoch": {"$not": {"$gt": epoch}}},
            {"$unset": {"resumeToken": ""}, "$max": {"leaderEpoch": epoch}},
        )
        return (
            result.matched_count > 0
            or self._collection.count_documents({"_id": PLANNER_ID}, limit=1) == 0
        )


_CHECKPOINT_PREFIX: Final = "reconcile:"
_SPEC_PREFIX: Final = "task:"
_TASKS_COLLECTION_PREFIX: Final = "tasks-collection:"
_THROTTLE_PREFIX: Final = "throttle:"
_METRICS_PREFIX: Final = "metrics:"
_INSTANCE_PREFIX: Final = "instance:"


def _checkpoint_id(collection: str) -> str:
    return _CHECKPOINT_PREFIX + collection
