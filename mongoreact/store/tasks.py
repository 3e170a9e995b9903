"""The ``<collection>_tasks`` collections: one method per operation on task records."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from ..definition import TaskDefinition
from ..durations import to_milliseconds
from ..records import ClaimedTask
from . import pipelines

logger = logging.getLogger("mongoreact.store")

Document = dict[str, Any]
_START: Any = None  # scan_ids(after=None): from the beginning


class TaskStore:
    """Task records of every tasks collection in one database."""

    def __init__(self, database: Database[Document]) -> None:
        self._db = database

    def ensure_indexes(self, tasks_collection: str) -> None:
        """Create the claim and uniqueness indexes (idempotent)."""
        indexes = [
            pipelines.SOURCE_INDEX,
            pipelines.POLL_INDEX,
            pipelines.ORPHAN_INDEX,
            pipelines.STATUS_INDEX,
        ]
        self._db[tasks_collection].create_indexes(indexes)

    def plan(self, definition: TaskDefinition, ids: list[Any], deleted: list[Any]) -> int:
        """Plan ``definition`` for source ``ids`` (``deleted`` among them are gone).

        Returns how many records the planning pass did not stamp and were marked as not
        matching. The ``$merge`` is retried on a duplicate-key race: two merges inserting
        the same (task, sourceDocId) at once (MongoDB does not retry that itself).
        """
        stamp = ObjectId()
        source = self._db[definition.collection]
        pipeline = pipelines.planning_pipeline(definition, ids, stamp)
        for attempt in range(3):
            try:
                source.aggregate(pipeline).close()
                break
            except (DuplicateKeyError, OperationFailure) as error:
                if error.code != 11000 or attempt == 2:
                    raise
        result = self._db[definition.tasks_collection].update_many(
            pipelines.unmatched_filter(definition.name, ids, deleted, stamp),
            pipelines.unmatched_update(deleted),
        )
        return result.modified_count

    def record_planning_failure(self, definition: TaskDefinition, doc_id: Any, error: str) -> None:
        """Park a document whose filter or projection fails on the server: its record
        is ``failed`` with the error, until the document changes and plans cleanly."""
        self._db[definition.tasks_collection].update_one(
            {"task": definition.name, "sourceDocId": doc_id},
            pipelines.planning_failure_update(error, ObjectId()),
            upsert=True,
        )

    def delete_orphans(
        self, definition: TaskDefinition, cutoff: dt.datetime, batch_size: int
    ) -> int:
        """Delete up to ``batch_size`` records the cleanup policy no longer keeps."""
        tasks = self._db[definition.tasks_collection]
        query = pipelines.orphan_filter(definition, cutoff)
        ids = [d["_id"] for d in tasks.find(query, {"_id": 1}).limit(batch_size)]
        if not ids:
            return 0
        # The filter again: a record may have been re-planned since it was read.
        return tasks.delete_many({"_id": {"$in": ids}, **query}).deleted_count

    def mark_vanished(self, definition: TaskDefinition, planned_before: ObjectId) -> int:
        """After a complete reconciliation: records it did not reach lost their source."""
        result = self._db[definition.tasks_collection].update_many(
            pipelines.vanished_filter(definition.name, planned_before),
            pipelines.VANISHED_UPDATE,
        )
        return result.modified_count

    def queue_stats(
        self, tasks_collection: str, read_preference: Any = None, *, all_statuses: bool = False
    ) -> list[Document]:
        """Per task and waiting or failed status (every status with ``all_statuses``): a
        count, and for ``pending`` the earliest ``dueAt`` (the oldest unhandled change)."""
        collection = self._db[tasks_collection]
        if read_preference is not None:
            collection = collection.with_options(read_preference=read_preference)
        pipeline = pipelines.STATUS_COUNTS if all_statuses else pipelines.QUEUE_STATS
        return list(collection.aggregate(pipeline))

    def defer(self, source_collection: str, task: str, doc_id: Any, until: Any) -> int:
        """Make a waiting or failed record due at ``until`` (an operator's deferral)."""
        result = self._db[source_collection + "_tasks"].update_one(
            {"task": task, "sourceDocId": doc_id, "status": {"$in": ["pending", "failed"]}},
            {"$set": {"status": "pending", "nextRunAt": until}},
        )
        return result.modified_count

    def reprocess(self, definition: TaskDefinition, *, failed_only: bool) -> int:
        """Run a task again for its matching documents (all, or those ``failed``), in
        one server-side update; running records become ``processing_dirty``."""
        query: Document = {"task": definition.name, "matched": {"$ne": False}}
        if failed_only:
            query["status"] = "failed"
        result = self._db[definition.tasks_collection].update_many(
            query, pipelines.reprocess_update()
        )
        return result.modified_count

    def claim(
        self,
        tasks_collection: str,
        tasks: list[str],
        *,
        now: dt.datetime,
        instance_id: str,
        lease: dt.timedelta,
    ) -> ClaimedTask | None:
        """Take the most overdue runnable record of ``tasks``, or ``None``."""
        claim_id = ObjectId()
        record = self._db[tasks_collection].find_one_and_update(
            pipelines.claim_filter(tasks, now),
            pipelines.claim_update(claim_id, instance_id, to_milliseconds(lease)),
            sort=pipelines.CLAIM_SORT,
            return_document=ReturnDocument.AFTER,
        )
        if record is None:
            return None
        return ClaimedTask(record=record, claim_id=claim_id, tasks_collection=tasks_collection)

    def renew(self, claims: list[ClaimedTask], lease: dt.timedelta) -> set[Any]:
        """Extend the leases of ``claims`` (one collection); return the claim ids lost."""
        if not claims:
            return set()
        collection = self._db[claims[0].tasks_collection]
        claim_ids = [c.claim_id for c in claims]
        fence = pipelines.fence_many([c.id for c in claims], claim_ids)
        result = collection.update_many(fence, pipelines.renew_update(to_milliseconds(lease)))
        if result.matched_count == len(claims):
            return set()
        held = {d["claimId"] for d in collection.find(fence, {"claimId": 1})}
        return set(claim_ids) - held

    def finalize(
        self, claim: ClaimedTask, update: list[Document], session: ClientSession | None = None
    ) -> Document | None:
        """Apply a finalize ``update`` if the claim still owns the record (inside
        ``session``'s transaction if given).

        Returns the record's new ``status`` and ``nextRunAt`` (so a follow-up run can be
        scheduled locally), or ``None`` if the claim no longer owns the record.
        """
        return self._db[claim.tasks_collection].find_one_and_update(
            pipelines.fence(claim.id, claim.claim_id),
            update,
            projection={"_id": 0, "status": 1, "nextRunAt": 1},
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    def unclaim(self, claim: ClaimedTask) -> None:
        """Give a record back as if it had not been claimed (fenced by the claim)."""
        self._db[claim.tasks_collection].update_one(
            pipelines.fence(claim.id, claim.claim_id), pipelines.unclaim_update()
        )

    def fetch_source(
        self,
        definition: TaskDefinition,
        record: Document,
        *,
        projection: Any = None,
        session: ClientSession | None = None,
    ) -> Document | None:
        """The late-binding read: the source document if it still qualifies."""
        return self._db[definition.collection].find_one(
            pipelines.late_binding_query(definition, record), projection, session=session
        )

    def scan_ids(
        self, collection: str, after: Any, limit: int, where: Document | None = None
    ) -> list[Any]:
        """The next ``limit`` source ``_id``s after ``after`` in ``_id`` order (of the
        documents matching ``where``, if given).

        Keyset pagination keeps no cursor open between batches. A query ``$gt`` only
        compares values of one BSON type, so when it runs dry the scan asks once, with
        an ``$expr`` comparison (whole BSON order), whether ids of a later type follow.
        """
        source = self._db[collection]

        def page(position: Document) -> list[Any]:
            query = {"$and": [position, where]} if where else position
            return [d["_id"] for d in source.find(query, {"_id": 1}).sort("_id", 1).limit(limit)]

        if after is _START:
            return page({})
        ids = page({"_id": {"$gt": after}})
        if ids:
            return ids
        return page({"$expr": {"$gt": ["$_id", {"$literal": after}]}})

    def validate_definition(self, definition: TaskDefinition) -> None:
        """Have the server parse the filter and projection without reading documents."""
        pipeline = pipelines.planning_pipeline(definition, [], ObjectId())[:-1]
        self._db[definition.collection].aggregate([*pipeline, {"$limit": 1}]).close()
