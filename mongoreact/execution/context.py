"""What a handler receives: the task, its document, and flow control."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import attrs
from pymongo.client_session import ClientSession

from ..clock import ServerClock, as_utc, utc_now
from ..cluster.throttles import SCOPES, Throttles
from ..config.definition import TaskDefinition
from ..config.durations import DurationLike, parse_duration
from ..errors import ConfigError, TaskConditionFailedError, TaskLeaseLostError
from ..records import ClaimedTask
from ..store.protocols import WorkStore


@attrs.define
class RunState:
    """What a handler tells the runner through its context: owned by the runner,
    written by ``TaskContext``'s flow-control methods."""

    # Finalizes the run as completed now (inside a session's transaction when given);
    # whether the record was this run's to complete.
    complete: Callable[[ClientSession | None], bool]
    deferred_until: dt.datetime | None = None
    completed: bool = False
    # The run ran past its timeout and was finalized by the watchdog: nothing the
    # handler does afterwards is recorded.
    taken_over: bool = False


class TaskContext:
    """The handler's view of one run of one task for one source document."""

    def __init__(
        self,
        *,
        definition: TaskDefinition,
        claim: ClaimedTask,
        store: WorkStore,
        clock: ServerClock,
        throttles: Throttles,
        run: RunState,
        on_read: Callable[[str], None] = lambda task: None,
    ) -> None:
        self._on_read = on_read
        self._definition = definition
        self._claim = claim
        self._store = store
        self._clock = clock
        self._throttles = throttles
        self._run = run
        self._cancelled = threading.Event()

    @property
    def task(self) -> str:
        """The task's name."""
        return self._definition.name

    @property
    def collection(self) -> str:
        """The source collection."""
        return self._definition.collection

    @property
    def doc_id(self) -> Any:
        """The source document's ``_id``."""
        return self._claim.record["sourceDocId"]

    @property
    def watched_values(self) -> Any:
        """The ``watch_projection`` snapshot this run was planned for."""
        return self._claim.record.get("lastObservedValues")

    @property
    def attempt(self) -> int:
        """Which run this is for the current data: 1 first, 2 for the first retry, ..."""
        return self._claim.attempt

    @property
    def cancelled(self) -> bool:
        """Whether this run was given up on: it ran past the task's ``timeout`` and
        its record was finalized as failed. A long handler can check it between steps
        and return; whatever it does after this is discarded."""
        return self._cancelled.is_set()

    @property
    def cancellation(self) -> threading.Event:
        """The ``Event`` behind ``cancelled``, to wait on instead of sleeping:
        ``if ctx.cancellation.wait(5): return``."""
        return self._cancelled

    def cancel(self) -> None:
        """Set ``cancelled`` (the runner does, at the timeout)."""
        self._cancelled.set()

    @property
    def record(self) -> dict[str, Any]:
        """The task record as claimed (read-only by convention)."""
        return self._claim.record

    def get_document(
        self, projection: Any = None, session: ClientSession | None = None
    ) -> dict[str, Any]:
        """The source document, checked in the same query that reads it.

        Raises ``TaskConditionFailedError`` when the document is gone, no longer matches
        the filter, or its watched values changed since planning; the run then ends as
        completed without counting a failure (a newer run is planned if data changed).
        """
        self._on_read(self.task)
        prefetched = self._claim.prefetched
        if projection is None and session is None and prefetched is not None:
            # Read with the claimed batch, a moment ago (see execution/prefetch.py).
            fresh, document = prefetched.take()
            if fresh:
                if document is None:
                    raise TaskConditionFailedError(self.task, self.doc_id)
                return document
        document = self._store.fetch_source(
            self._definition, self._claim.record, projection=projection, session=session,
            after=self._claim.read_after,
        )  # fmt: skip
        if document is None:
            raise TaskConditionFailedError(self.task, self.doc_id)
        return document

    def mark_completed(self, session: ClientSession | None = None) -> None:
        """Complete this task now, inside ``session``'s transaction when given: the
        business writes and the completion commit together (exactly-once effects for
        database writes). If the transaction aborts, the run ends as the handler does.

        Raises ``TaskLeaseLostError`` when this run no longer owns the record (its lease
        expired and another worker claimed it): inside a transaction that aborts it, so
        the business writes are not committed a second time."""
        if not self._run.complete(session):
            raise TaskLeaseLostError(self.task, self.doc_id)
        self._run.completed = True

    def defer_current(self, delay: DurationLike | dt.datetime) -> None:
        """Run this task again later (a duration or a datetime), without counting an
        attempt. Takes effect when the handler returns normally."""
        self._run.deferred_until = self._when(delay, "defer_current")

    def throttle_all(self, delay: DurationLike | dt.datetime, scope: str = "instance") -> None:
        """Claim no task of this type for a while (a duration or a datetime): on this
        instance, or with ``scope="cluster"`` on every instance (they notice within
        about a second). Takes effect at once, whatever the handler does next; the
        current run is not affected (combine with ``defer_current`` to postpone it)."""
        if scope not in SCOPES:
            raise ConfigError("scope", scope, "expected 'instance' or 'cluster'")
        until = self._when(delay, "throttle_all")
        seconds = (until - self._clock.now()).total_seconds()
        self._throttles.pause(self.task, seconds, cluster=scope == "cluster")

    def _when(self, delay: object, option: str) -> dt.datetime:
        if isinstance(delay, dt.datetime):
            # A datetime is a wall-clock time; shift it onto the server's clock.
            return as_utc(delay) + (self._clock.now() - utc_now())
        if delay is None:
            raise ConfigError(option, delay, "expected a duration or a datetime")
        return self._clock.now() + parse_duration(delay, option)


Handler = Callable[[TaskContext], object]
"""What ``register`` runs: a function of the task's context."""
