"""The update and aggregation pipelines that move task records between states.

They run on the server and take every timestamp from ``$$NOW``, so hosts with skewed
clocks agree on leases and due times. Field names follow the reference library's
record (camelCase) so existing tooling and dashboards read our records too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from bson import ObjectId
from pymongo import IndexModel

from ..config.definition import TaskDefinition
from ..config.triggers import trigger_fingerprint
from ..records import (
    ACTIVE,
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    PROCESSING_DIRTY,
    QUEUED,
    Outcome,
    RunEnd,
)

NOW: Final = "$$NOW"
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# The claim's index: the partial filter leaves finished records (nextRunAt null) out, so
# however many completed records pile up, polling only ever touches runnable ones.
POLL_INDEX: Final = IndexModel(
    [("task", 1), ("nextRunAt", 1)],
    name="mongoreact_poll",
    partialFilterExpression={"nextRunAt": {"$type": "date"}},
)
# One record per (task, source document); $merge's "on" needs exactly this unique index.
# The management API and the queue-depth metric filter on status per task.
STATUS_INDEX: Final = IndexModel([("task", 1), ("status", 1)], name="mongoreact_status")
SOURCE_INDEX: Final = IndexModel(
    [("task", 1), ("sourceDocId", 1)], name="mongoreact_task_source", unique=True
)


# Only records whose source is gone or stopped matching: what cleanup looks at.
ORPHAN_INDEX: Final = IndexModel(
    [("task", 1), ("matched", 1), ("updatedAt", 1)],
    name="mongoreact_orphans",
    partialFilterExpression={"matched": False},
)


def epoch_fence(epoch: int) -> dict[str, Any]:
    """Matches records no leader after ``epoch`` has planned: a deposed leader's late
    planning write (retried over a stall, or read before its successor's) must not
    overwrite what its successor planned."""
    return {"planEpoch": {"$not": {"$gt": epoch}}}


def matching_ids(definition: TaskDefinition, ids: list[Any]) -> dict[str, Any]:
    """The source documents of ``ids`` that match ``definition``'s filter."""
    match: dict[str, Any] = {"_id": {"$in": ids}}
    if definition.filter is not None:
        match = {"$and": [match, definition.filter]}
    return match


def planning_pipeline(
    definition: TaskDefinition,
    ids: list[Any],
    stamp: ObjectId,
    epoch: int,
    scan: ObjectId | None = None,
) -> list[dict[str, Any]]:
    """Plan ``definition`` for the source documents ``ids`` in one server-side pass.

    Documents that match the filter get their snapshot computed and merged into the
    tasks collection: a new record is ``pending`` after the debounce; an existing one
    runs again only when its snapshot changed (or it had stopped matching). Every merged
    record is stamped with ``stamp`` so the caller can tell which ids did not match,
    and with the leader ``epoch``: a record a later leader planned is left as it is.
    While a reconciliation of the collection runs, records are also stamped with its
    ``scan`` id: the records it did not reach when it completes have lost their source.
    """
    due = {"$add": [NOW, definition.debounce_ms]}
    return [
        {"$match": matching_ids(definition, ids)},
        {
            "$project": {
                "_id": 0,
                "task": {"$literal": definition.name},
                "sourceDocId": "$_id",
                "lastObservedValues": definition.watch_expression,
                "status": {"$literal": PENDING},
                "attempts": {"$literal": 0},
                "matched": {"$literal": True},
                "sourceDeletedAt": {"$literal": None},
                "createdAt": NOW,
                "updatedAt": NOW,
                "nextRunAt": due,
                "dueAt": due,
                "planStamp": {"$literal": stamp},
                "planEpoch": {"$literal": epoch},
                "seenBy": {"$literal": scan},
                # The definition that planned it: a worker running another one (during
                # a rolling deploy) leaves the run to an instance that runs this one.
                "planTrigger": {
                    "$literal": trigger_fingerprint(definition.filter, definition.watch_expression)
                },
                "plannedAt": NOW,
            }
        },
        {
            "$merge": {
                "into": definition.tasks_collection,
                "on": ["task", "sourceDocId"],
                "whenMatched": _replan(definition),
                "whenNotMatched": "insert",
            }
        },
    ]


def _replan(definition: TaskDefinition) -> list[dict[str, Any]]:
    changed = "$_changed"
    reset = definition.retry_policy.reset_retries_on_data_change
    # How long further changes may push a pending run back: max_debounce from the first
    # unhandled change, which dueAt (= that change + debounce) already includes once.
    slack = definition.max_debounce_ms - definition.debounce_ms
    return [
        {"$set": {"_old": "$$ROOT"}},
        {
            "$set": {
                "_changed": {
                    "$or": [
                        {"$ne": ["$lastObservedValues", "$$new.lastObservedValues"]},
                        {"$eq": ["$matched", False]},
                    ]
                },
                "_active": {"$in": ["$status", list(ACTIVE)]},
                "_unhandled": {"$in": ["$status", [PENDING, PROCESSING_DIRTY]]},
            }
        },
        {
            "$set": {
                "lastObservedValues": "$$new.lastObservedValues",
                "matched": True,
                "sourceDeletedAt": None,
                "planStamp": "$$new.planStamp",
                "planEpoch": "$$new.planEpoch",
                "planTrigger": "$$new.planTrigger",
                "seenBy": {"$ifNull": ["$$new.seenBy", "$seenBy"]},
                "plannedAt": "$$new.plannedAt",
                "status": _if(changed, _if("$_active", PROCESSING_DIRTY, PENDING), "$status"),
                "updatedAt": _if(changed, "$$new.updatedAt", "$updatedAt"),
                # dueAt marks the first change not handled yet; later changes keep it, so
                # the lag metric and max_debounce see a document that never settles.
                "dueAt": _if(
                    changed,
                    _if("$_unhandled", {"$ifNull": ["$dueAt", "$$new.dueAt"]}, "$$new.dueAt"),
                    "$dueAt",
                ),
                "attempts": _if(changed, 0, "$attempts") if reset else "$attempts",
                "firstErrorAt": _if(changed, None, "$firstErrorAt") if reset else "$firstErrorAt",
            }
        },
        {
            "$set": {
                # A running task keeps its lease (nextRunAt) and becomes processing_dirty.
                "nextRunAt": _if(
                    {"$and": [changed, {"$not": ["$_active"]}]},
                    {"$min": ["$$new.nextRunAt", {"$add": ["$dueAt", slack]}]},
                    "$nextRunAt",
                )
            }
        },
        {"$unset": ["_changed", "_active", "_unhandled", "planningError"]},
        # Fenced: a record a later leader planned stays exactly as it was.
        {
            "$replaceWith": {
                "$cond": [
                    {"$gt": [{"$ifNull": ["$_old.planEpoch", 0]}, "$$new.planEpoch"]},
                    "$_old",
                    "$$ROOT",
                ]
            }
        },
        {"$unset": ["_old"]},
    ]


def unmatched_filter(
    task: str, ids: list[Any], deleted: list[Any], stamp: ObjectId, epoch: int
) -> dict[str, Any]:
    """Records of ``ids`` the last planning pass did not stamp, not yet marked as such
    (and not planned by a leader after ``epoch``)."""
    return {
        "task": task,
        "sourceDocId": {"$in": ids},
        "planStamp": {"$ne": stamp},
        **epoch_fence(epoch),
        "$or": [
            {"matched": {"$ne": False}},
            {"sourceDocId": {"$in": deleted}, "sourceDeletedAt": None},
        ],
    }


def unmatched_update(deleted: list[Any], epoch: int) -> list[dict[str, Any]]:
    """Record that a source document stopped matching, or is gone (``deleted``)."""
    return [
        {
            "$set": {
                "matched": False,
                "planEpoch": {"$literal": epoch},
                "sourceDeletedAt": _if(
                    {"$in": ["$sourceDocId", {"$literal": deleted}]},
                    {"$ifNull": ["$sourceDeletedAt", NOW]},
                    None,
                ),
            }
        }
    ]


def planning_failure_update(
    error: str, stamp: ObjectId, epoch: int, scan: ObjectId | None = None
) -> list[dict[str, Any]]:
    """Mark a record as failed to plan (creating it if needed). A running record keeps
    its status and lease, so its worker can still finalize; it only notes the error.
    Its document exists: a reconciliation ``scan`` under way counts it as reached."""
    active = "$_active"
    return [
        {"$set": {"_active": {"$in": [{"$ifNull": ["$status", None]}, list(ACTIVE)]}}},
        {
            "$set": {
                "planningError": {"$literal": error},
                "planStamp": stamp,
                "planEpoch": {"$literal": epoch},
                "seenBy": {"$ifNull": [{"$literal": scan}, "$seenBy"]},
                "plannedAt": NOW,  # the document exists
                "status": _if(active, "$status", FAILED),
                "nextRunAt": _if(active, "$nextRunAt", None),
                "lastError": _if(active, "$lastError", {"$literal": f"planning failed: {error}"}),
                "lastFinalizedAt": _if(active, "$lastFinalizedAt", NOW),
                "attempts": {"$ifNull": ["$attempts", 0]},
                "matched": {"$ifNull": ["$matched", True]},
                "createdAt": {"$ifNull": ["$createdAt", NOW]},
                "updatedAt": {"$ifNull": ["$updatedAt", NOW]},
            }
        },
        {"$unset": ["_active"]},
    ]


def reprocess_update() -> list[dict[str, Any]]:
    """Due now with a fresh attempt count; a running record re-runs after its run."""
    active = {"$in": ["$status", list(ACTIVE)]}
    return [
        {
            "$set": {
                "status": _if(active, PROCESSING_DIRTY, PENDING),
                "nextRunAt": _if(active, "$nextRunAt", NOW),
                "dueAt": NOW,
                "updatedAt": NOW,
                "attempts": 0,
                "firstErrorAt": None,
            }
        }
    ]


def _idle_since(cutoff: dt.datetime) -> dict[str, Any]:
    """Records not running, untouched by data changes and runs since ``cutoff``."""
    return {
        "updatedAt": {"$lt": cutoff},
        "status": {"$nin": list(ACTIVE)},
        "$or": [{"lastFinalizedAt": {"$lt": cutoff}}, {"lastFinalizedAt": None}],
    }


def orphan_filter(definition: TaskDefinition, cutoff: dt.datetime) -> dict[str, Any]:
    """Records the cleanup policy deletes: source gone (or, with
    ``sourceDocumentDeletedOrNoLongerMatching``, not matching), idle, and untouched by
    data changes and runs since ``cutoff`` (``keep_for`` ago)."""
    query: dict[str, Any] = {"task": definition.name, "matched": False, **_idle_since(cutoff)}
    if definition.cleanup_policy.delete_when == "sourceDocumentDeleted":
        query["sourceDeletedAt"] = {"$type": "date"}
    return query


def idle_matched_filter(task: str, cutoff: dt.datetime, after: ObjectId | None) -> dict[str, Any]:
    """Records still marked as matching, idle since ``cutoff`` and not planned since
    either (a re-plan of unchanged values leaves ``updatedAt`` as it was), after record
    ``after`` in ``_id`` order: those a cleanup re-checks against a filter that reads
    the clock."""
    query: dict[str, Any] = {
        "task": task,
        "matched": {"$ne": False},
        "plannedAt": {"$not": {"$gte": cutoff}},
        **_idle_since(cutoff),
    }
    if after is not None:
        query["_id"] = {"$gt": after}
    return query


def unplanned_since_read(
    task: str, records: list[dict[str, Any]], cutoff: dt.datetime
) -> dict[str, Any]:
    """``records`` (read with their ``planStamp``) if no planning pass stamped them
    since, and still idle: a document that matched again in between was planned, so its
    record is left alone."""
    return {
        "$and": [
            idle_matched_filter(task, cutoff, None),
            {"$or": [{"_id": r["_id"], "planStamp": r.get("planStamp")} for r in records]},
        ]
    }


def vanished_filter(task: str, scan: ObjectId, epoch: int) -> dict[str, Any]:
    """Records a finished reconciliation (``scan``) did not reach, and that no live event
    planned while it ran: their source no longer exists.

    No clock is involved: comparing planning times with the scan's start marked live
    records as deleted across a failover to a member whose clock is behind.
    """
    return {"task": task, "matched": {"$ne": False}, "seenBy": {"$ne": scan}, **epoch_fence(epoch)}


def vanished_update(epoch: int) -> list[dict[str, Any]]:
    """Record that a source document is gone (a reconciliation did not find it)."""
    return [{"$set": {"matched": False, "sourceDeletedAt": NOW, "planEpoch": {"$literal": epoch}}}]


STATUS_COUNTS: Final[list[dict[str, Any]]] = [
    {
        "$group": {
            "_id": {"task": "$task", "status": "$status"},
            "count": {"$sum": 1},
            "oldestDue": {"$min": "$dueAt"},
        }
    },
]
QUEUE_STATS: Final[list[dict[str, Any]]] = [
    {"$match": {"status": {"$in": list(QUEUED)}}},
    *STATUS_COUNTS,
]


# Due (or the lease expired) by the server's own clock: ``now`` is the host's estimate
# of it and keeps the query on the poll index, but a host whose estimate runs ahead
# (its clock stepped, a failover to a primary whose clock is behind) must not take a
# lease that is still running.
DUE_ON_THE_SERVER: Final = {"$expr": {"$lte": ["$nextRunAt", NOW]}}
# How long a record planned under another definition of its task waits for an instance
# that runs that definition before any instance takes it (see claim_filter).
FOREIGN_GRACE: Final = dt.timedelta(minutes=1)


def claim_filter(
    tasks: list[str], now: dt.datetime, triggers: list[str] | None = None
) -> dict[str, Any]:
    """Runnable records of ``tasks`` that are due, or whose worker's lease expired.

    With ``triggers`` (the fingerprints of the claimer's own definitions), only records
    planned under one of them: during a rolling deploy that changes a filter or watch
    projection, an instance running the old definition would judge a record the new
    one planned by its own filter (skip it, and so complete it unhandled) or run code
    that does not expect it. It leaves such records to instances running the new one.
    Records that no longer match are claimed by anyone (their run is skipped), as are
    records planned before records carried their trigger, and records overdue by more
    than ``FOREIGN_GRACE``: when no instance runs the definition that planned them any
    more (a canary removed, a rollback), they must not wait for ever.
    """
    query: dict[str, Any] = {
        "task": {"$in": tasks},
        "nextRunAt": {"$lte": now},
        "status": {"$in": [PENDING, *ACTIVE]},
        **DUE_ON_THE_SERVER,
    }
    if triggers is not None:
        query["$or"] = [
            {"planTrigger": {"$in": [*triggers, None]}},
            {"matched": False},
            {"nextRunAt": {"$lte": now - FOREIGN_GRACE}},
        ]
    return query


CLAIM_SORT: Final = [("nextRunAt", 1)]
# Fields that together change with every write to a record: a batch claim takes a
# candidate only while they still hold what was read. A planning pass always writes a
# new planStamp (the snapshot itself may be large: it is not repeated in the filter).
_VERSION_FIELDS: Final = (
    "status", "claimId", "attempts", "planStamp", "nextRunAt", "firstErrorAt",
    "lastFinalizedAt",
)  # fmt: skip


def claim_candidate(record: dict[str, Any]) -> dict[str, Any]:
    """Matches ``record`` (read by ``claim_filter``) only while it is exactly as read,
    so still runnable and due.

    A record re-planned, claimed or finalized after the read no longer matches, so the
    claimed record handed to the worker is the version that was claimed: a run never
    works on one snapshot while its finalize closes another.
    """
    version = {field: record.get(field) for field in _VERSION_FIELDS}
    return {"_id": record["_id"], **version, **DUE_ON_THE_SERVER}


def claim_update(claim_id: ObjectId, instance_id: str, lease_ms: int) -> list[dict[str, Any]]:
    """Take the record: ``processing`` under a fresh lease, one more attempt.

    ``claimed`` mirrors these fields locally; change both together."""
    return [
        {
            "$set": {
                "status": PROCESSING,
                "claimId": claim_id,
                "claimedBy": {"$literal": instance_id},
                "startedAt": NOW,
                "nextRunAt": {"$add": [NOW, lease_ms]},
                "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
            }
        }
    ]


def claimed(
    record: dict[str, Any],
    claim_id: ObjectId,
    instance_id: str,
    now: dt.datetime,
    lease_ms: int,
) -> dict[str, Any]:
    """``record`` as ``claim_update`` leaves it, worked out locally from the record read
    before the claim (times from ``now``, the caller's estimate of the server's)."""
    return {
        **record,
        "status": PROCESSING,
        "claimId": claim_id,
        "claimedBy": instance_id,
        "startedAt": now,
        "nextRunAt": now + dt.timedelta(milliseconds=lease_ms),
        "attempts": (record.get("attempts") or 0) + 1,
    }


def renew_update(lease_ms: int) -> list[dict[str, Any]]:
    """Push the lease of held records forward."""
    return [{"$set": {"nextRunAt": {"$add": [NOW, lease_ms]}}}]


def fence(record_id: Any, claim_id: ObjectId) -> dict[str, Any]:
    """Matches the record only while this claim still owns it."""
    return {"_id": record_id, "claimId": claim_id, "status": {"$in": list(ACTIVE)}}


def unclaim_update() -> list[dict[str, Any]]:
    """Give a claimed record back untouched: due now, the attempt not counted."""
    return [
        {
            "$set": {
                "status": PENDING,
                "nextRunAt": NOW,
                "attempts": {"$max": [0, {"$subtract": ["$attempts", 1]}]},
            }
        }
    ]


def slot_acquire_pipeline(slot_id: ObjectId, limit: int, lease_ms: int) -> list[dict[str, Any]]:
    """Drop expired holders, then add ``slot_id`` if fewer than ``limit`` remain."""
    live = {
        "$filter": {
            "input": {"$ifNull": ["$holders", []]},
            "cond": {"$gt": ["$$this.expiresAt", NOW]},
        }
    }
    mine = [{"id": slot_id, "expiresAt": {"$add": [NOW, lease_ms]}}]
    return [
        {"$set": {"holders": live}},
        {
            "$set": {
                "holders": _if(
                    {"$lt": [{"$size": "$holders"}, limit]},
                    {"$concatArrays": ["$holders", mine]},
                    "$holders",
                )
            }
        },
    ]


def slot_renew_pipeline(slot_ids: list[ObjectId], lease_ms: int) -> list[dict[str, Any]]:
    """Extend the slots ``slot_ids`` still held."""
    extended = {"id": "$$this.id", "expiresAt": {"$add": [NOW, lease_ms]}}
    return [
        {
            "$set": {
                "holders": {
                    "$map": {
                        "input": {"$ifNull": ["$holders", []]},
                        "in": _if({"$in": ["$$this.id", slot_ids]}, extended, "$$this"),
                    }
                }
            }
        }
    ]


def fence_many(record_ids: list[Any], claim_ids: list[ObjectId]) -> dict[str, Any]:
    """Matches those of the records still owned by one of ``claim_ids``."""
    return {
        "_id": {"$in": record_ids},
        "claimId": {"$in": claim_ids},
        "status": {"$in": list(ACTIVE)},
    }


def finalize_update(
    definition: TaskDefinition, end: RunEnd, *, attempt: int, claim_id: ObjectId
) -> list[dict[str, Any]]:
    """Close run ``attempt`` of claim ``claim_id``, which ended as ``end`` (any outcome
    but ``LEASE_LOST`` and ``ERROR``, which write nothing).

    A record that turned ``processing_dirty`` while the handler ran goes back to
    ``pending`` whatever the outcome, due once its debounce from the last change has
    passed, so the newest data is handled next; if the run deferred itself, at the later
    of its deferral and that debounce.
    """
    outcome = end.outcome
    next_run_at: Any = end.next_run_at
    if next_run_at is not None and end.decided_at is not None:
        # Timed from the server's clock, by the distance the worker decided on.
        delay_ms = max(0, int((next_run_at - end.decided_at).total_seconds() * 1000))
        next_run_at = {"$add": [NOW, delay_ms]}
    dirty = {"$eq": ["$status", PROCESSING_DIRTY]}
    dirty_due = {
        "$max": [
            NOW,
            {
                "$min": [
                    {"$add": ["$updatedAt", definition.debounce_ms]},
                    {
                        "$add": [
                            {"$ifNull": ["$dueAt", "$updatedAt"]},
                            definition.max_debounce_ms - definition.debounce_ms,
                        ]
                    },
                ]
            },
        ]
    }
    succeeded = outcome in (Outcome.COMPLETED, Outcome.SKIPPED)
    deferred = outcome is Outcome.DEFERRED
    status, next_run = {
        Outcome.COMPLETED: (COMPLETED, None),
        Outcome.SKIPPED: (COMPLETED, None),
        Outcome.FAILED: (FAILED, None),
        Outcome.RETRY: (PENDING, next_run_at),
        Outcome.DEFERRED: (PENDING, next_run_at),
    }[outcome]
    # A deferral is the handler saying when it may run again (a rate limit, a business
    # wait): new data does not cut it short, but it still waits for its debounce.
    dirty_next_run = {"$max": [next_run, dirty_due]} if deferred else dirty_due
    fields: dict[str, Any] = {
        "status": PENDING if deferred else _if(dirty, PENDING, status),
        "nextRunAt": _if(dirty, dirty_next_run, next_run),
        "lastFinalizedAt": NOW,
    }
    if succeeded:
        fields.update(
            completedAt=NOW,
            lastSuccess={"at": NOW, "durationMs": end.duration_ms},
            firstErrorAt=None,
            lastError=None,
            lastErrorTraceback=None,
        )
    elif deferred:
        # A deferral is not a failed attempt: give back the one the claim counted.
        fields["attempts"] = {"$max": [0, {"$subtract": ["$attempts", 1]}]}
    else:
        fields.update(
            lastError={"$literal": end.error},
            lastErrorTraceback={"$literal": end.traceback},
            # After a change the retry window starts again with the next failure.
            firstErrorAt=_if(dirty, "$firstErrorAt", {"$ifNull": ["$firstErrorAt", NOW]}),
        )
    entry: dict[str, Any] = {
        "at": NOW,
        "status": FAILED if outcome in (Outcome.RETRY, Outcome.FAILED) else outcome.value,
        "durationMs": end.duration_ms,
        "attempt": attempt,
        "instanceId": {"$literal": end.instance_id},
        "claimId": claim_id,
    }
    if end.error is not None:
        # Literals: an error message that starts with "$" must not read as a field path.
        entry.update(error={"$literal": end.error}, traceback={"$literal": end.traceback})
    limit = definition.execution_history_limit
    history: Any = (
        {
            "$slice": [
                {"$concatArrays": [{"$ifNull": ["$executionHistory", []]}, [entry]]},
                -limit,
            ]
        }
        if limit
        else {"$literal": []}
    )
    return [{"$set": fields}, {"$set": {"executionHistory": history}}]


def signed_finalize(update: list[dict[str, Any]], claim_id: ObjectId) -> list[dict[str, Any]]:
    """A finalize ``update`` that also records which claim wrote it: a finalize retried
    after a lost reply finds its own write (``finalized_by``), even after another
    instance has claimed the record again."""
    return [*update, {"$set": {"finalizedClaimId": claim_id}}]


def finalized_by(record_id: Any, claim_id: ObjectId) -> dict[str, Any]:
    """Matches the record if ``claim_id``'s finalize has been applied to it."""
    return {"_id": record_id, "finalizedClaimId": claim_id}


def late_binding_query(definition: TaskDefinition, record: dict[str, Any]) -> dict[str, Any]:
    """The source document, only if it still matches and still has the planned snapshot."""
    clauses: list[dict[str, Any]] = [{"_id": record["sourceDocId"]}]
    if definition.filter is not None:
        clauses.append(definition.filter)
    observed = record.get("lastObservedValues")
    if observed is not None:
        clauses.append({"$expr": {"$eq": [definition.watch_expression, {"$literal": observed}]}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _if(condition: Any, then: Any, otherwise: Any) -> dict[str, Any]:
    return {"$cond": {"if": condition, "then": then, "else": otherwise}}
