"""The ``<collection>_tasks`` collections: one method per operation on task records."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
from collections.abc import Iterator
from typing import Any, Final

from bson import ObjectId, Timestamp
from pymongo import ReturnDocument, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.read_preferences import ReadPreference

from ..clock import as_utc
from ..config.definition import TaskDefinition, tasks_collection_of
from ..config.durations import to_milliseconds
from ..records import (
    FAILED,
    NOT_OWNED,
    PENDING,
    WRITTEN_IN_BATCH,
    BatchClaim,
    ClaimedTask,
    Finalized,
    RunEnd,
    TaskQueue,
    by_collection,
    source_key,
)
from . import pipelines
from .server import error_summary

logger = logging.getLogger(__name__)

Document = dict[str, Any]
_START: Any = None  # scan_ids(after=None): from the beginning
# ``monitoring.read_preference``'s names (the URI's spelling) to pymongo's preferences.
_READ_PREFERENCES: Final = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}


# A tasks collection that exists on a server reporting no UUID for it: whether it was
# dropped cannot be told that way (see ``Planner._check_tasks_collections``).
UNKNOWN_UUID: Final = "unknown"


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

    def collection_uuid(self, tasks_collection: str) -> Any:
        """The server's UUID of ``tasks_collection``: ``None`` if it does not exist,
        ``UNKNOWN_UUID`` if the server reports none. A collection dropped and created
        again gets a new one."""
        for info in self._db.list_collections(filter={"name": tasks_collection}):
            return (info.get("info") or {}).get("uuid", UNKNOWN_UUID)
        return None

    def plan(
        self,
        definition: TaskDefinition,
        ids: list[Any],
        deleted: list[Any],
        *,
        epoch: int = 0,
        scan: ObjectId | None = None,
    ) -> int:
        """Plan ``definition`` for source ``ids`` (``deleted`` among them are gone):
        ``merge``, then ``mark_unmatched``. Returns how many records were marked."""
        stamp = self.merge(definition, ids, epoch=epoch, scan=scan)
        return self.mark_unmatched(definition, ids, deleted, stamp, epoch=epoch)

    @contextlib.contextmanager
    def reading_after(self, after: Timestamp | None) -> Iterator[ClientSession | None]:
        """A causally consistent session whose reads see everything up to the cluster
        time ``after`` (``None``: no session, nothing to wait for).

        Reads already go to the primary with the "majority" read concern, but right
        after a failover the new primary's majority snapshot can still be older than a
        write the old one acknowledged: a read then saw a document older than the
        change event being planned, or than the version a worker claimed. With
        ``afterClusterTime`` the server waits until its snapshot has caught up.
        """
        if after is None:
            yield None
            return
        with self._db.client.start_session(causal_consistency=True) as session:
            session.advance_operation_time(after)
            yield session

    def merge(
        self,
        definition: TaskDefinition,
        ids: list[Any],
        *,
        epoch: int,
        after: Timestamp | None = None,
        scan: ObjectId | None = None,
    ) -> ObjectId:
        """The first half of planning: upsert the records of the documents of ``ids``
        that match the filter, stamped with the returned planning stamp.

        Every planning write is fenced by the leader ``epoch``: a record a later
        leader has planned is not changed (see ``pipelines.epoch_fence``). The source
        documents are read at or after ``after``, the cluster time of the newest change
        event planned (see ``reading_after``).

        The ``$merge`` is retried on a duplicate-key race: two merges inserting the same
        (task, sourceDocId) at once (MongoDB does not retry that itself).
        """
        stamp = ObjectId()
        source = self._db[definition.collection]
        pipeline = pipelines.planning_pipeline(definition, ids, stamp, epoch, scan)
        for attempt in range(3):
            try:
                with self.reading_after(after) as session:
                    source.aggregate(pipeline, session=session).close()
                break
            except (DuplicateKeyError, OperationFailure) as error:
                if error.code != 11000 or attempt == 2:
                    raise
        return stamp

    def mark_unmatched(
        self,
        definition: TaskDefinition,
        ids: list[Any],
        deleted: list[Any],
        stamp: ObjectId,
        *,
        epoch: int,
        after: Timestamp | None = None,
    ) -> int:
        """The second half of planning, after the ``merge`` that gave ``stamp`` over
        ``ids``: mark the records it did not stamp whose source document is gone or no
        longer matches the filter; how many were marked.

        A missing stamp alone does not prove the document stopped matching: another
        pass may have stamped the record since (a deposed leader's pass arriving after
        a network stall, racing its successor's). Marking such a record unmatched made
        its next re-plan see a change and run a completed version again, so the source
        is asked which of the unstamped ones really do not match.
        """
        tasks = self._db[definition.tasks_collection]
        query = pipelines.unmatched_filter(definition.name, ids, deleted, stamp, epoch)
        unstamped = [r["sourceDocId"] for r in tasks.find(query, {"sourceDocId": 1})]
        if not unstamped:
            return 0
        with self.reading_after(after) as session:
            matching = self._matching(definition, unstamped, session)
        gone = [i for i in unstamped if source_key(i) not in matching]
        if not gone:
            return 0
        # The marking is fenced by the epoch, so between the read of the source above
        # and this write only this leader's own (later, sequential) passes can have
        # planned these records: a successor's re-plan of a document that came back
        # stamps a later epoch, and this update then leaves it alone.
        result = tasks.update_many(
            pipelines.unmatched_filter(definition.name, gone, deleted, stamp, epoch),
            pipelines.unmatched_update(deleted, epoch),
        )
        return result.modified_count

    def record_planning_failure(
        self,
        definition: TaskDefinition,
        doc_id: Any,
        error: str,
        *,
        epoch: int,
        scan: ObjectId | None = None,
    ) -> bool:
        """Park a document whose filter or projection fails on the server: its record
        is ``failed`` with the error, until the document changes and plans cleanly.
        ``False`` when a later leader has planned the record (nothing written)."""
        try:
            self._db[definition.tasks_collection].update_one(
                {"task": definition.name, "sourceDocId": doc_id, **pipelines.epoch_fence(epoch)},
                pipelines.planning_failure_update(error, ObjectId(), epoch, scan),
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # the record exists with a later epoch: the upsert's insert clashed
        return True

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

    def unmatch_by_time(
        self, definition: TaskDefinition, cutoff: dt.datetime, after: ObjectId | None, limit: int
    ) -> tuple[int, ObjectId | None]:
        """Re-check ``definition``'s filter for up to ``limit`` records idle since
        ``cutoff`` and still marked as matching, from record ``after`` on, and mark those
        whose document no longer matches it (a filter reading ``$$NOW`` stops matching
        with no write to report it). (How many were marked, the last record read or
        ``None`` once every record was read.)"""
        tasks = self._db[definition.tasks_collection]
        query = pipelines.idle_matched_filter(definition.name, cutoff, after)
        fields = {"sourceDocId": 1, "planStamp": 1}
        records = list(tasks.find(query, fields).sort("_id", 1).limit(limit))
        if not records:
            return 0, None
        ids = [r["sourceDocId"] for r in records]
        try:
            matching = self._matching(definition, ids)
        except OperationFailure:
            # The filter fails on some document (planning parks such a document as a
            # failed record, which turns idle like any other): asked one by one, a
            # document whose answer is an error counts as matching, its record kept.
            matching = set()
            for doc_id in ids:
                matching |= self._matching_or_kept(definition, doc_id)
        stale = [r for r in records if source_key(r["sourceDocId"]) not in matching]
        marked = 0
        if stale:
            result = tasks.update_many(
                pipelines.unplanned_since_read(definition.name, stale, cutoff),
                {"$set": {"matched": False}},
            )
            marked = result.modified_count
        return marked, records[-1]["_id"] if len(records) == limit else None

    def _matching(
        self, definition: TaskDefinition, ids: list[Any], session: ClientSession | None = None
    ) -> set[Any]:
        """Source keys of those of ``ids`` whose document matches the filter now."""
        query = pipelines.matching_ids(definition, ids)
        found = self._db[definition.collection].find(query, {"_id": 1}, session=session)
        return {source_key(d["_id"]) for d in found}

    def _matching_or_kept(self, definition: TaskDefinition, doc_id: Any) -> set[Any]:
        try:
            return self._matching(definition, [doc_id])
        except OperationFailure as error:
            logger.warning(
                "%s: the filter fails on document %r (%s); its record is kept",
                definition.name, doc_id, error_summary(error),
            )  # fmt: skip
            return {source_key(doc_id)}

    def mark_vanished(self, definition: TaskDefinition, scan: ObjectId, *, epoch: int) -> int:
        """After a complete reconciliation ``scan``: the records it did not reach, and no
        event planned while it ran, have lost their source."""
        result = self._db[definition.tasks_collection].update_many(
            pipelines.vanished_filter(definition.name, scan, epoch),
            pipelines.vanished_update(epoch),
        )
        return result.modified_count

    def queue_stats(
        self,
        tasks_collection: str,
        read_preference: str | None = None,
        *,
        all_statuses: bool = False,
    ) -> list[Document]:
        """Per task and waiting or failed status (every status with ``all_statuses``): a
        count, and for ``pending`` the earliest ``dueAt`` (the oldest unhandled change).
        ``read_preference`` is a mode name (``"secondaryPreferred"``); default primary."""
        collection = self._db[tasks_collection]
        if read_preference is not None:
            collection = collection.with_options(read_preference=_READ_PREFERENCES[read_preference])
        pipeline = pipelines.STATUS_COUNTS if all_statuses else pipelines.QUEUE_STATS
        return list(collection.aggregate(pipeline))

    def queue_summary(
        self,
        collections: list[str],
        now: dt.datetime,
        read_preference: str | None = None,
        *,
        all_statuses: bool = False,
    ) -> dict[str, TaskQueue]:
        """``queue_stats`` of the source ``collections``' tasks, per task."""
        summary: dict[str, TaskQueue] = {}
        for collection in sorted(set(collections)):
            stats = self.queue_stats(
                tasks_collection_of(collection), read_preference, all_statuses=all_statuses
            )
            for row in stats:
                task, status = row["_id"]["task"], row["_id"]["status"]
                queue = summary.setdefault(task, TaskQueue(collection=collection))
                queue.counts[status] = row["count"]
                oldest = row.get("oldestDue")
                if status == PENDING and oldest is not None:
                    queue.lag = max(0.0, (now - as_utc(oldest)).total_seconds())
        return summary

    # -- the management API's reads and writes (mongoreact.management) ----------------
    def count_records(self, tasks_collection: str, query: Document) -> int:
        """How many records in ``tasks_collection`` match ``query``."""
        return self._db[tasks_collection].count_documents(query)

    def find_records(
        self, tasks_collection: str, query: Document, sort: list[tuple[str, int]], limit: int
    ) -> list[Document]:
        """The first ``limit`` matching records in ``sort`` order."""
        return list(self._db[tasks_collection].find(query).sort(sort).limit(limit))

    def record(self, tasks_collection: str, task: str, doc_id: Any) -> Document | None:
        """The record of ``task`` for source document ``doc_id``, with its history."""
        return self._db[tasks_collection].find_one(
            {"task": task, "sourceDocId": {"$eq": doc_id}}  # an id, never an operator
        )

    def retry_records(self, tasks_collection: str, query: Document) -> tuple[int, int]:
        """Make matching records run again now (a running one re-runs after its run);
        (matched, modified)."""
        result = self._db[tasks_collection].update_many(query, pipelines.reprocess_update())
        return result.matched_count, result.modified_count

    def discard_failed(self, tasks_collection: str, query: Document) -> int:
        """Delete the matching records that are ``failed`` (an operator gives up on
        them); how many."""
        failed = {"$and": [query, {"status": FAILED}]}
        return self._db[tasks_collection].delete_many(failed).deleted_count

    def source_ids(self, source_collection: str, query: Document, batch: int) -> Iterator[Any]:
        """The ``_id``s of the source documents matching ``query``, read ``batch`` at a
        time (never all held at once)."""
        cursor = self._db[source_collection].find(query, {"_id": 1}, batch_size=batch)
        return (document["_id"] for document in cursor)

    def defer(self, tasks_collection: str, task: str, doc_id: Any, until: Any) -> int:
        """Make a waiting or failed record due at ``until`` (an operator's deferral)."""
        result = self._db[tasks_collection].update_one(
            {"task": task, "sourceDocId": {"$eq": doc_id}, "status": {"$in": [PENDING, FAILED]}},
            {"$set": {"status": PENDING, "nextRunAt": until}},
        )
        return result.modified_count

    def reprocess(self, definition: TaskDefinition, *, failed_only: bool) -> int:
        """Run a task again for its matching documents (all, or those ``failed``), in
        one server-side update; running records become ``processing_dirty``."""
        query: Document = {"task": definition.name, "matched": {"$ne": False}}
        if failed_only:
            query["status"] = FAILED
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
        triggers: list[str] | None = None,
    ) -> ClaimedTask | None:
        """Take the most overdue runnable record of ``tasks`` (planned under one of
        ``triggers``, if given: see ``pipelines.claim_filter``), or ``None``."""
        claim_id = ObjectId()
        with self._db.client.start_session(causal_consistency=True) as session:
            record = self._db[tasks_collection].find_one_and_update(
                pipelines.claim_filter(tasks, now, triggers),
                pipelines.claim_update(claim_id, instance_id, to_milliseconds(lease)),
                sort=pipelines.CLAIM_SORT,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
        if record is None:
            return None
        return ClaimedTask(
            record=record, claim_id=claim_id, tasks_collection=tasks_collection,
            read_after=session.operation_time,
        )  # fmt: skip

    def claim_many(
        self,
        tasks_collection: str,
        tasks: list[str],
        *,
        now: dt.datetime,
        instance_id: str,
        lease: dt.timedelta,
        limit: int,
        spread: int = 1,
        triggers: list[str] | None = None,
    ) -> BatchClaim:
        """Take up to ``limit`` of the most overdue runnable records of ``tasks``
        (planned under one of ``triggers``, if given: see ``pipelines.claim_filter``).

        Two commands for the whole batch instead of one per record: read the candidates,
        then claim each with an update that matches it only if it is still exactly the
        version read (see ``pipelines.claim_candidate``): a candidate claimed, re-planned
        or finalized in between is not taken, so the worker runs what it claimed. Each
        record gets its own ``claimId``, as with ``claim``. Only when another instance
        won some of them does a third command find out which.

        Instances claiming at once all read the same most overdue records and collide;
        with ``spread`` > 1 the batch is a random ``limit`` of the ``limit * spread``
        most overdue, which makes collisions rare.
        """
        if limit <= 1 and spread <= 1:
            claim = self.claim(
                tasks_collection, tasks, now=now, instance_id=instance_id, lease=lease,
                triggers=triggers,
            )  # fmt: skip
            return BatchClaim([] if claim is None else [claim])
        # One causally consistent session: its operation time after the claim is what
        # the late-binding reads of these records wait for (ClaimedTask.read_after).
        with self._db.client.start_session(causal_consistency=True) as session:
            collection = self._db[tasks_collection]
            query = pipelines.claim_filter(tasks, now, triggers)
            read = collection.find(query, session=session)
            candidates = list(read.sort(pipelines.CLAIM_SORT).limit(limit * spread))
            if len(candidates) > limit:
                chosen = sorted(random.sample(range(len(candidates)), limit))
                candidates = [candidates[i] for i in chosen]
            if not candidates:
                return BatchClaim([])
            lease_ms = to_milliseconds(lease)
            claim_ids = [ObjectId() for _ in candidates]
            result = collection.bulk_write(
                [
                    UpdateOne(
                        pipelines.claim_candidate(record),
                        pipelines.claim_update(claim_id, instance_id, lease_ms),
                    )
                    for record, claim_id in zip(candidates, claim_ids, strict=True)
                ],
                ordered=False,
                session=session,
            )
            won = list(zip(candidates, claim_ids, strict=True))
            lost = len(candidates) - result.modified_count
            if lost:
                held = {
                    d["_id"]
                    for d in collection.find(
                        pipelines.fence_many([r["_id"] for r in candidates], claim_ids),
                        {"_id": 1},
                        session=session,
                    )
                }
                won = [(record, claim_id) for record, claim_id in won if record["_id"] in held]
            claims = [
                ClaimedTask(
                    record=pipelines.claimed(record, claim_id, instance_id, now, lease_ms),
                    claim_id=claim_id,
                    tasks_collection=tasks_collection,
                    read_after=session.operation_time,
                )
                for record, claim_id in won
            ]
            return BatchClaim(claims, lost=lost)

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
        self,
        claim: ClaimedTask,
        definition: TaskDefinition,
        end: RunEnd,
        session: ClientSession | None = None,
    ) -> Finalized:
        """Record how ``claim``'s run ended if the claim still owns the record (inside
        ``session``'s transaction if given).

        The answer carries the record's new ``status`` and ``nextRunAt`` (so a follow-up
        run can be scheduled locally), or says the claim no longer owns the record.
        """
        collection = self._db[claim.tasks_collection]
        projection = {"_id": 0, "status": 1, "nextRunAt": 1}
        written = collection.find_one_and_update(
            pipelines.fence(claim.id, claim.claim_id),
            _finalize_update(claim, definition, end),
            projection=projection,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if written is None:
            # Retried after a lost reply (by us or by the driver), the first attempt may
            # have been applied; the record then names this claim as its finalizer.
            written = collection.find_one(
                pipelines.finalized_by(claim.id, claim.claim_id), projection, session=session
            )
        if written is None:
            return NOT_OWNED
        return Finalized(
            written=True, known=True, status=written.get("status"),
            next_run_at=written.get("nextRunAt"),
        )  # fmt: skip

    def finalize_many(
        self, requests: list[tuple[ClaimedTask, TaskDefinition, RunEnd]]
    ) -> list[Finalized]:
        """``finalize`` for several claims in one command per tasks collection.

        The answers are what is known without reading the records back: written (the
        new status is not returned), or not owned. Only when some update matched
        nothing does a second command find out which.
        """
        answers = [WRITTEN_IN_BATCH for _ in requests]
        by_collection: dict[str, list[int]] = {}
        for index, (claim, _, _) in enumerate(requests):
            by_collection.setdefault(claim.tasks_collection, []).append(index)
        for name, indexes in by_collection.items():
            collection = self._db[name]
            claims = [requests[i][0] for i in indexes]
            result = collection.bulk_write(
                [
                    UpdateOne(
                        pipelines.fence(claim.id, claim.claim_id),
                        _finalize_update(claim, *requests[i][1:]),
                    )
                    for i, claim in zip(indexes, claims, strict=True)
                ],
                ordered=False,
            )
            if result.matched_count == len(indexes):
                continue
            # One retried after a lost reply may have been applied by the first attempt:
            # the record then names its claim as the finalizer.
            finalized = {
                (d["_id"], d["finalizedClaimId"])
                for d in collection.find(
                    {"$or": [pipelines.finalized_by(c.id, c.claim_id) for c in claims]},
                    {"_id": 1, "finalizedClaimId": 1},
                )
            }
            for i, claim in zip(indexes, claims, strict=True):
                if (claim.id, claim.claim_id) not in finalized:
                    answers[i] = NOT_OWNED
        return answers

    def unclaim_many(self, claims: list[ClaimedTask]) -> None:
        """Give records back as if they had not been claimed (each fenced by its claim),
        one command per tasks collection."""
        for name, held in by_collection(claims).items():
            self._db[name].bulk_write(
                [
                    UpdateOne(pipelines.fence(c.id, c.claim_id), pipelines.unclaim_update())
                    for c in held
                ],
                ordered=False,
            )

    def fetch_source(
        self,
        definition: TaskDefinition,
        record: Document,
        *,
        projection: Any = None,
        session: ClientSession | None = None,
        after: Timestamp | None = None,
    ) -> Document | None:
        """The late-binding read: the source document if it still qualifies. Read at or
        after ``after`` (the claim's cluster time) unless inside the caller's
        ``session``, whose transaction decides what it sees."""
        query = pipelines.late_binding_query(definition, record)
        if session is not None:
            return self._db[definition.collection].find_one(query, projection, session=session)
        with self.reading_after(after) as causal:
            return self._db[definition.collection].find_one(query, projection, session=causal)

    def fetch_sources(
        self, definition: TaskDefinition, records: list[Document], *, after: Any = None
    ) -> dict[Any, Document]:
        """The late-binding read of several records of one task in one query: their
        source documents that still qualify, by ``_id`` (unhashable ids by ``repr``)."""
        # The ``$in`` first: it narrows the read to the batch through the ``_id`` index
        # (the ``$or`` of per-record checks alone may be planned as a collection scan).
        query = {
            "$and": [
                {"_id": {"$in": [r["sourceDocId"] for r in records]}},
                {"$or": [pipelines.late_binding_query(definition, r) for r in records]},
            ]
        }
        with self.reading_after(after) as session:
            found = self._db[definition.collection].find(query, session=session)
            return {source_key(document["_id"]): document for document in found}

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

    def validate_filter(self, definition: TaskDefinition) -> None:
        """Have the server parse the task's filter, reading no document."""
        match = {"$and": [{"_id": {"$in": []}}, definition.filter or {}]}
        self._db[definition.collection].aggregate([{"$match": match}, {"$limit": 1}]).close()

    def validate_definition(self, definition: TaskDefinition) -> None:
        """Have the server parse the whole planning pipeline (filter and watch
        projection), reading no document."""
        pipeline = pipelines.planning_pipeline(definition, [], ObjectId(), 0)[:-1]
        self._db[definition.collection].aggregate([*pipeline, {"$limit": 1}]).close()


def _finalize_update(claim: ClaimedTask, definition: TaskDefinition, end: RunEnd) -> list[Document]:
    """The finalize of ``claim``'s run, signed with the claim (see ``finalized_by``)."""
    update = pipelines.finalize_update(
        definition, end, attempt=claim.attempt, claim_id=claim.claim_id
    )
    return pipelines.signed_finalize(update, claim.claim_id)
