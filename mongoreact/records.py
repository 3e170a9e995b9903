"""The task record's vocabulary: statuses, how a run ended (``Outcome``: the store's
finalize updates and the runner both speak it, so it lives here, below both), field
names and the value objects handed out."""

from __future__ import annotations

import datetime as dt
import enum
import time
from typing import Any, Final

import attrs


class Status(str, enum.Enum):
    """A task record's status (a ``str``: the values are what records store). The
    module's ``PENDING``, ``PROCESSING``, ... are its members."""

    PENDING = "pending"
    """Waiting to run once due."""
    PROCESSING = "processing"
    """Claimed by a worker, under a lease."""
    PROCESSING_DIRTY = "processing_dirty"
    """Running, and the watched values changed meanwhile: it runs again after."""
    COMPLETED = "completed"
    """The current version was handled."""
    FAILED = "failed"
    """The retry policy gave up: the dead-letter state."""

    def __str__(self) -> str:
        return self.value


PENDING: Final = Status.PENDING
PROCESSING: Final = Status.PROCESSING
PROCESSING_DIRTY: Final = Status.PROCESSING_DIRTY
COMPLETED: Final = Status.COMPLETED
FAILED: Final = Status.FAILED
STATUSES: Final = tuple(Status)
ACTIVE: Final = (PROCESSING, PROCESSING_DIRTY)
RUNNABLE: Final = (PENDING, *ACTIVE)
FRESH_FOR: Final = 1.0  # seconds a batch read may answer a handler's get_document()
QUEUED: Final = (*RUNNABLE, FAILED)  # what the queue-depth gauge counts


class Outcome(str, enum.Enum):
    """How one run ended (a ``str``: the values are what records and metrics say)."""

    COMPLETED = "completed"
    """The handler returned; the record is ``completed``."""
    DEFERRED = "deferred"
    """The handler asked to run again later (``ctx.defer_current``)."""
    SKIPPED = "skipped"
    """The document no longer qualified (``TaskConditionFailedError``)."""
    RETRY = "retry"
    """The handler failed; the retry policy schedules another run."""
    FAILED = "failed"
    """The handler failed and the retry policy gives up: the dead-letter state."""
    LEASE_LOST = "lease_lost"
    """Another worker took the record meanwhile; nothing was recorded."""
    ERROR = "error"
    """The run broke before it had an outcome (a bug or an interrupted stop)."""

    def __str__(self) -> str:
        return self.value


@attrs.frozen(kw_only=True)
class RunEnd:
    """How a run ended, as its finalize records it: what the worker tells the store,
    which builds the update itself (``store/pipelines.py``)."""

    outcome: Outcome
    duration_ms: int
    instance_id: str
    error: str | None = None
    traceback: str | None = None
    next_run_at: dt.datetime | None = None  # the retry or deferral time
    # This instance's estimate of the server's clock when ``next_run_at`` was decided:
    # the store then times it from the server's own clock ($$NOW) by the same distance,
    # so an estimate off for a moment (a clock step) delays no retry.
    decided_at: dt.datetime | None = None

    def __attrs_post_init__(self) -> None:
        # Without it a retried or deferred record would be pending and never due.
        if self.outcome in (Outcome.RETRY, Outcome.DEFERRED) and self.next_run_at is None:
            raise ValueError(f"a {self.outcome} run needs next_run_at")


@attrs.frozen(kw_only=True)
class TaskInfo:
    """What ``task_filter`` is asked about: a task name and its source collection."""

    task: str
    collection: str


@attrs.define
class Prefetched:
    """The source document a batch read found for one claim (``None``: it no longer
    qualified), when, and whether a handler has had it (execution/prefetch.py)."""

    document: dict[str, Any] | None
    at: float = attrs.field(factory=time.monotonic)
    used: bool = False

    def take(self) -> tuple[bool, dict[str, Any] | None]:
        """``(True, document)`` the first time while fresh; ``(False, None)`` after."""
        if self.used or time.monotonic() - self.at > FRESH_FOR:
            return False, None
        self.used = True
        return True, self.document


@attrs.frozen(kw_only=True)
class ClaimedTask:
    """A task record this instance has claimed, as the claim returned it."""

    record: dict[str, Any]
    claim_id: Any
    tasks_collection: str
    holds_slot: bool = False  # one of the task's cluster-wide max_concurrency slots
    # The source document read with its batch (execution/prefetch.py), if it was.
    prefetched: Prefetched | None = attrs.field(default=None, eq=False, repr=False)
    # The cluster time of the claim (a bson Timestamp): the late-binding read happens at
    # or after it, so it sees at least the version that was planned, even on a primary
    # elected since (causal consistency; see TaskStore.reading_after).
    read_after: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def id(self) -> Any:
        """The record's ``_id``."""
        return self.record["_id"]

    @property
    def attempt(self) -> int:
        """Number of this run for the current data (1 for the first)."""
        return int(self.record.get("attempts", 1))


def source_key(doc_id: Any) -> Any:
    """A dictionary key for a source document's ``_id`` (an embedded document or an
    array is not hashable: its ``repr`` stands in)."""
    try:
        hash(doc_id)
    except TypeError:
        return repr(doc_id)
    return doc_id


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
