"""Group commit for the updates that close runs.

Under load many worker threads finish at about the same time, and each would send its
own finalize. Here the first thread to arrive writes at once; threads arriving while a
write is in flight queue up, and the next write carries all of them in one command. So a
lone finalize waits for nothing, and a busy instance sends one command per batch
instead of one per task. When the batch in flight completes, the oldest queued thread
is handed the next write, so no thread writes on others' behalf for long.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import attrs

from .records import ClaimedTask
from .store.tasks import TaskStore

Document = dict[str, Any]
MAX_BATCH: Final = 100


@attrs.define(eq=False)
class _Request:
    claim: ClaimedTask
    update: list[Document]
    wakeup: threading.Event = attrs.field(factory=threading.Event)
    done: bool = False
    answer: Document | None = None
    error: BaseException | None = None


class Finalizer:
    """Writes finalize updates, batching those that arrive together."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._writing = False

    def finalize(self, claim: ClaimedTask, update: list[Document]) -> Document | None:
        """Apply ``update`` if ``claim`` still owns its record.

        Returns ``None`` if it does not; otherwise the record's new ``status`` and
        ``nextRunAt`` when written alone, or ``{}`` when written in a batch (the
        batched command does not return documents). Transient errors are raised to the
        caller, who may call again: the update is fenced, so it applies at most once.
        """
        request = _Request(claim, update)
        with self._lock:
            self._queue.append(request)
            lead = not self._writing
            self._writing = True
        if not lead:
            request.wakeup.wait()
        if not request.done:
            self._write_next()  # this thread's turn; its request is in the batch
        if request.error is not None:
            raise request.error
        return request.answer

    def _write_next(self) -> None:
        with self._lock:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
        try:
            if len(batch) == 1:
                answers = [self._store.finalize(batch[0].claim, batch[0].update)]
            else:
                answers = self._store.finalize_many([(r.claim, r.update) for r in batch])
            for request, answer in zip(batch, answers, strict=True):
                request.answer = answer
        except BaseException as error:  # handed to every caller, who decides
            for request in batch:
                request.error = error
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wakeup.set()  # the next writer
                else:
                    self._writing = False
            for request in batch:
                request.done = True
                request.wakeup.set()
