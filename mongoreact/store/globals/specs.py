"""Published task specs (``task:<name>``): how every instance learns the tasks the
others registered, and which handler version is newest."""

from __future__ import annotations

import datetime as dt
from typing import Final

import attrs
from pymongo.collection import Collection

from ...clock import as_utc
from .fencing import Document

_SPEC_PREFIX: Final = "task:"


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


class SpecStore:
    """Publishes, reads and keeps fresh the task specs."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def publish(self, spec: Document) -> Publication:
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

    def restore(self, newer: Document, stored: Document) -> bool:
        """Put back ``newer`` (a spec document as read earlier) in place of ``stored``
        (an older one a restore brought back), unless it changed again meanwhile."""
        key = {"_id": newer["_id"], "publishedAt": stored.get("publishedAt")}
        return self._collection.replace_one(key, newer).matched_count > 0

    def stored(self, tasks: list[str]) -> dict[str, Document]:
        """The published specs of ``tasks`` (version, trigger, when), by task name."""
        query = {"_id": {"$in": [_SPEC_PREFIX + t for t in tasks]}}
        fields = {"task": 1, "handlerVersion": 1, "triggerHash": 1, "publishedAt": 1}
        return {d["task"]: d for d in self._collection.find(query, fields)}

    def touch(self, tasks: list[str]) -> int:
        """Note that an instance still registers ``tasks``; how many were found."""
        return self._collection.update_many(
            {"_id": {"$in": [_SPEC_PREFIX + t for t in tasks]}}, {"$currentDate": {"seenAt": True}}
        ).matched_count

    def load(self, seen_since: dt.datetime) -> list[Document]:
        """Specs some instance registered at or after ``seen_since``."""
        query = {"_id": {"$regex": "^" + _SPEC_PREFIX}, "seenAt": {"$gte": seen_since}}
        return list(self._collection.find(query))

    def task_collections(self) -> dict[str, str]:
        """Task name -> source collection, from the definitions instances published."""
        query = {"_id": {"$regex": "^" + _SPEC_PREFIX}}
        return {
            spec["task"]: spec["collection"]
            for spec in self._collection.find(query, {"task": 1, "collection": 1})
        }
