"""The task record's vocabulary: statuses, field names and the value objects handed out."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import attrs

PENDING: Final = "pending"
PROCESSING: Final = "processing"
PROCESSING_DIRTY: Final = "processing_dirty"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, PROCESSING, PROCESSING_DIRTY, COMPLETED, FAILED)
ACTIVE: Final = (PROCESSING, PROCESSING_DIRTY)
RUNNABLE: Final = (PENDING, *ACTIVE)
QUEUED: Final = (*RUNNABLE, FAILED)  # what the queue-depth gauge counts


@attrs.frozen(kw_only=True)
class TaskInfo:
    """What ``task_filter`` is asked about: a task name and its source collection."""

    task: str
    collection: str


@attrs.frozen(kw_only=True)
class ClaimedTask:
    """A task record this instance has claimed, as the claim returned it."""

    record: dict[str, Any]
    claim_id: Any
    tasks_collection: str
    holds_slot: bool = False  # one of the task's cluster-wide max_concurrency slots

    @property
    def id(self) -> Any:
        """The record's ``_id``."""
        return self.record["_id"]

    @property
    def attempt(self) -> int:
        """Number of this run for the current data (1 for the first)."""
        return int(self.record.get("attempts", 1))


def by_collection(claims: list[ClaimedTask]) -> dict[str, list[ClaimedTask]]:
    """``claims`` grouped by tasks collection (one command per collection)."""
    grouped: dict[str, list[ClaimedTask]] = {}
    for claim in claims:
        grouped.setdefault(claim.tasks_collection, []).append(claim)
    return grouped


@attrs.frozen
class Finalized:
    """What a finalize did: ``written`` unless the claim no longer owned the record;
    when the write returned it, the record's new ``status`` and ``next_run_at`` (a write
    in a batch does not: then both are ``None`` and ``known`` is false)."""

    written: bool
    known: bool = False
    status: str | None = None
    next_run_at: dt.datetime | None = None


NOT_OWNED: Final = Finalized(written=False)
WRITTEN_IN_BATCH: Final = Finalized(written=True)


@attrs.frozen
class BatchClaim:
    """What a batch claim took, and how many of its candidates other claimers won."""

    claims: list[ClaimedTask]
    lost: int = 0


@attrs.define
class TaskQueue:
    """One task's records by status, and its lag: seconds since the oldest pending
    record fell due (``None`` when nothing is pending)."""

    collection: str
    counts: dict[str, int] = attrs.field(factory=dict)
    lag: float | None = None
