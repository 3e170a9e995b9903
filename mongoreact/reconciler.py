"""Reconciliation: plan every document of a collection, not just the changed ones.

It runs on the leader, in the planner thread, after the change stream is open (so no
write falls between the scan and the stream): for tasks never reconciled (new tasks
catch up with existing documents) and for every task after the stream's history was
lost. It reads ``_id``s only, in ``_id`` order and in batches, plans each batch with the
same code as change events, and checkpoints the last ``_id`` after each batch: a new
leader resumes there, unless the set of tasks being reconciled changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any, Final

from bson import ObjectId

from ._retry import call_with_retry
from .definition import TaskDefinition
from .registry import TaskRegistry
from .store.globals import GlobalsStore
from .store.tasks import TaskStore

logger = logging.getLogger("mongoreact.reconciler")

VANISHED_MARGIN: Final = dt.timedelta(minutes=1)


class Reconciler:
    """Brings the tasks collections in line with the source collections."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        task_store: TaskStore,
        globals_store: GlobalsStore,
        batch_size: int,
        should_stop: Callable[[], bool],
        stopping: threading.Event,
    ) -> None:
        self._registry = registry
        self._tasks = task_store
        self._globals = globals_store
        self._batch_size = batch_size
        self._should_stop = should_stop
        self._stopping = stopping

    def run(self, plan: Callable[[TaskDefinition, list[Any]], None]) -> Iterator[bool]:
        """Reconcile every task not reconciled yet, one batch per step.

        Yields ``False`` after each batch (so the caller can plan live events in
        between) and finally ``True`` once everything is reconciled; stops early,
        without the final ``True``, when asked to.
        """
        done = set(self._retry(self._globals.reconciled_tasks, "reading reconciliation state"))
        for collection in self._registry.collections:
            pending = [d for d in self._registry.for_collection(collection) if d.name not in done]
            if pending:
                finished = yield from self._collection(collection, pending, plan)
                if not finished:
                    return
        yield True

    def _collection(
        self,
        collection: str,
        definitions: list[TaskDefinition],
        plan: Callable[[TaskDefinition, list[Any]], None],
    ) -> Generator[bool, None, bool]:
        names = sorted(d.name for d in definitions)
        checkpoint = self._retry(
            partial(self._globals.load_checkpoint, collection, names), "reading the checkpoint"
        )
        after = checkpoint.last_id if checkpoint is not None else None
        # Documents planned before the scan began and not reached by it are gone; the
        # margin absorbs clock differences between the leaders that ran the scan.
        stamp = (checkpoint.scan_stamp if checkpoint else None) or ObjectId()
        logger.info(
            "reconciling %s for %s%s", collection, ", ".join(names),
            " from the checkpoint" if checkpoint else "",
        )  # fmt: skip
        scanned = 0
        while True:
            if self._should_stop():
                logger.info("reconciliation of %s interrupted after %d ids", collection, scanned)
                return False
            ids = self._retry(
                partial(self._tasks.scan_ids, collection, after, self._batch_size), "scanning ids"
            )
            if not ids:
                break
            for definition in definitions:
                plan(definition, ids)
            after = ids[-1]
            scanned += len(ids)
            self._retry(
                partial(self._globals.save_checkpoint, collection, names, after, stamp),
                "checkpointing",
            )
            yield False
        before = ObjectId.from_datetime(stamp.generation_time - VANISHED_MARGIN)
        for definition in definitions:
            vanished = self._retry(
                partial(self._tasks.mark_vanished, definition, before), "marking vanished"
            )
            if vanished:
                logger.info("%s: %d record(s) whose document is gone", definition.name, vanished)
        self._retry(partial(self._globals.finish_reconciliation, collection, names), "finishing")
        logger.info("reconciled %s: %d documents", collection, scanned)
        return True

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retry(fn, self._stopping, what=f"reconciliation: {what}")
