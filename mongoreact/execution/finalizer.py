"""Writing the updates that close runs, in the background and in batches.

A worker thread hands its run's finalize update over and goes on to its next task; one
thread per instance writes what has been handed over. The first update to arrive is
written at once; updates arriving while a write is in flight go together in the next
one. So a lone finalize waits for nothing, and a busy instance sends one command per
batch instead of one per task - without its worker threads waiting for the server.

The record keeps its lease until the update is written: nothing is lost if the process
dies in between (the lease expires and the task runs again, as for a crash mid-run).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import attrs

from .._retry import OUTLIVES_STOP, call_with_retry
from .._threads import Loop
from ..config.definition import TaskDefinition
from ..records import NOT_OWNED, ClaimedTask, Finalized, RunEnd
from ..store.protocols import WorkStore

logger = logging.getLogger(__name__)

Document = dict[str, Any]
# What the finalize did (``NOT_OWNED`` when it could not be written), and why not.
Done = Callable[[Finalized, BaseException | None], None]
MAX_BATCH: Final = 100
IDLE_WAIT: Final = 1.0


@attrs.define(eq=False)
class _Request:
    claim: ClaimedTask
    definition: TaskDefinition
    end: RunEnd
    done: Done


class Finalizer(Loop):
    """Writes the ends of runs handed over by ``submit``, batching those that wait."""

    def __init__(self, store: WorkStore, instance_id: str) -> None:
        super().__init__(f"mongoreact-finalizer-{instance_id}")
        self._store = store
        self._lock = threading.Lock()
        self._queue: list[_Request] = []

    def submit(
        self, claim: ClaimedTask, definition: TaskDefinition, end: RunEnd, done: Done
    ) -> None:
        """Record ``end`` if ``claim`` still owns its record, then call ``done`` (from
        the finalizer thread). The write is fenced by the claim, so it applies at most
        once even when it is retried after a transient error."""
        with self._lock:
            self._queue.append(_Request(claim, definition, end, done))
        self.wake()

    @property
    def waiting(self) -> int:
        """Updates handed over and not yet written."""
        with self._lock:
            return len(self._queue)

    def step(self) -> float:
        # A submit() while this writes is kept by Loop: the next wait ends at once.
        self.write_all()
        return IDLE_WAIT

    def on_stop(self) -> None:
        # Whatever was handed over before stop() is still written.
        self.write_all()

    def write_all(self) -> None:
        """Write everything handed over so far (in the calling thread)."""
        while True:
            with self._lock:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
            if not batch:
                return
            self.write(batch)

    def write(self, batch: list[_Request]) -> None:
        """One command for ``batch`` (``findAndModify`` for a single update, so its
        caller learns the new status), retried on transient errors."""

        def send() -> list[Finalized]:
            if len(batch) == 1:
                one = batch[0]
                return [self._store.finalize(one.claim, one.definition, one.end)]
            return self._store.finalize_many([(r.claim, r.definition, r.end) for r in batch])

        error: BaseException | None = None
        try:
            # The run happened: its result is worth writing after stop() too.
            answers = call_with_retry(send, OUTLIVES_STOP, what="finalizing")
        except Exception as failure:  # handed to every run, who logs it
            error = failure
            answers = [NOT_OWNED] * len(batch)
        for request, answer in zip(batch, answers, strict=True):
            _notify(request, answer, error)


def _notify(request: _Request, answer: Finalized, error: BaseException | None) -> None:
    try:
        request.done(answer, error)
    except Exception:
        logger.exception("error after finalizing task %s", request.claim.record["task"])
