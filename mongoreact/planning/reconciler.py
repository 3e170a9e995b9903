"""Reconciliation: plan every document of a collection, not just the changed ones.

It runs on the leader, in the planner thread, after the change stream is open (so no
write falls between the scan and the stream): for tasks never reconciled (new tasks
catch up with existing documents) and for every task after the stream's history was
lost. It reads ``_id``s only, in ``_id`` order and in batches, plans each batch with the
same code as change events, and checkpoints the last ``_id`` after each batch: a new
leader resumes there, unless the set of tasks being reconciled changed.

History lost during a scan starts a new *reconciliation generation*: checkpoints carry
their generation, and a scan of an older one can neither be resumed from nor mark
anything reconciled, so after a history loss every scan starts from the beginning.
Checkpoints are also fenced by the leader epoch, so a deposed leader's scan cannot
overwrite its successor's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any

from bson import ObjectId

from .._retry import call_with_retry
from ..cluster.specs import is_reconciled, reconciliation_key
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..store.globals import Checkpoint, ReconciliationStore
from ..store.tasks import TaskStore

logger = logging.getLogger(__name__)


class Reconciler:
    """Brings the tasks collections in line with the source collections."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        task_store: TaskStore,
        reconciliation: ReconciliationStore,
        batch_size: int,
        should_stop: Callable[[], bool],
        stopping: threading.Event,
        epoch: int,
        superseded: Callable[[], None],
    ) -> None:
        self._epoch = epoch
        self._superseded = superseded
        # The highest generation this planner has seen: one lower read later means the
        # globals went back in time.
        self._floor = 0
        self._registry = registry
        self._tasks = task_store
        self._state = reconciliation
        self._batch_size = batch_size
        self._should_stop = should_stop
        self._stopping = stopping
        # The scan under way per collection: live planning stamps its records too.
        self.scanning: dict[str, ObjectId] = {}

    def run(self, plan: Callable[[TaskDefinition, list[Any]], None]) -> Iterator[bool]:
        """Reconcile every task not reconciled yet, one batch per step.

        Yields ``False`` after each batch (so the caller can plan live events in
        between) and finally ``True`` once everything is reconciled; stops early,
        without the final ``True``, when asked to.
        """
        generation = self._retry(self._state.generation, "reading the generation")
        if generation < self._floor:
            # The state went back in time (the globals restored from a backup): what the
            # newer generation was started for (a history loss, a dropped collection)
            # is no longer on record, so every task is reconciled again.
            logger.warning(
                "the reconciliation state went back to generation %d from %d (the globals "
                "restored?); reconciling every task again",
                generation, self._floor,
            )  # fmt: skip
            if not self._retry(partial(self._state.reset, epoch=self._epoch), "resetting"):
                self._superseded()
                return
            generation = self._retry(self._state.generation, "reading the generation")
            self._floor = generation  # the new truth: lower than the floor perhaps
        self._floor = max(self._floor, generation)
        done = set(self._retry(self._state.reconciled, "reading reconciliation state"))
        scans: list[tuple[str, list[TaskDefinition], Checkpoint | None]] = []
        for collection in self._registry.collections:
            definitions = self._registry.for_collection(collection)
            pending = [d for d in definitions if not is_reconciled(d, done)]
            if pending:
                names = sorted(reconciliation_key(d) for d in pending)
                checkpoint = self._retry(
                    partial(self._state.load_checkpoint, collection, names, generation),
                    "reading the checkpoint",
                )
                scans.append((collection, pending, checkpoint))
                # Every collection's scan id is known before anything is planned: live
                # events planned before its scan (re)starts carry it too, so a scan
                # resumed from a checkpoint cannot take what they planned below the
                # checkpoint for gone.
                self.scanning[collection] = checkpoint.scan_id if checkpoint else ObjectId()
        try:
            for collection, pending, checkpoint in scans:
                finished = yield from self._collection(
                    collection, pending, checkpoint, plan, generation
                )
                self.scanning.pop(collection, None)
                if not finished:
                    return
        finally:
            self.scanning.clear()
        yield True

    def _collection(
        self,
        collection: str,
        definitions: list[TaskDefinition],
        checkpoint: Checkpoint | None,
        plan: Callable[[TaskDefinition, list[Any]], None],
        generation: int,
    ) -> Generator[bool, None, bool]:
        # Checkpoints and the finish are keyed by the definitions (name and trigger), so
        # a changed definition never resumes or finishes an older one's scan.
        names = sorted(reconciliation_key(d) for d in definitions)
        after = checkpoint.last_id if checkpoint is not None else None
        # Every record the scan reaches, or a live event plans while it runs, carries its
        # id; the others have lost their document. Resumed scans keep the id.
        scan_id = self.scanning[collection]
        logger.info(
            "reconciling %s for %s%s", collection, ", ".join(d.name for d in definitions),
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
            saved = self._retry(
                partial(
                    self._state.save_checkpoint, collection, names, after, scan_id,
                    generation=generation, epoch=self._epoch,
                ),
                "checkpointing",
            )  # fmt: skip
            if not saved:
                self._refused(collection, generation)
                return False
            yield False
        if not self._same_generation(generation):
            return False
        for definition in definitions:
            vanished = self._retry(
                partial(self._tasks.mark_vanished, definition, scan_id, epoch=self._epoch),
                "marking vanished",
            )
            if vanished:
                logger.info("%s: %d record(s) whose document is gone", definition.name, vanished)
        finished = self._retry(
            partial(
                self._state.finish, collection, names, generation,
                epoch=self._epoch,
            ),
            "finishing",
        )  # fmt: skip
        if not finished:
            self._refused(collection, generation)
            return False
        logger.info("reconciled %s: %d documents", collection, scanned)
        return True

    def _refused(self, collection: str, generation: int) -> None:
        """A checkpoint or the finish was refused: a newer generation started (the scan
        is abandoned; the next one starts from the beginning), or a later leader epoch
        wrote the planner's state. Retrying would be refused again for good, so the
        planner stops; the election then starts a new term if this instance still holds
        the lease (its document went back in time: ``LeaderElector.refence``)."""
        if not self._same_generation(generation):
            return
        logger.warning(
            "reconciliation of %s: a later leader epoch wrote its state; this planner stops",
            collection,
        )
        self._superseded()

    def _same_generation(self, generation: int) -> bool:
        """Whether no history loss has started a new generation since the scan began;
        a scan of an older one is abandoned (the new one runs from the beginning)."""
        current = self._retry(self._state.generation, "reading the generation")
        if current != generation:
            _log_abandoned()
        return bool(current == generation)

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return call_with_retry(fn, self._stopping, what=f"reconciliation: {what}")


def _log_abandoned() -> None:
    logger.warning(
        "the change stream history was lost during the reconciliation; its scan is "
        "abandoned and starts again from the beginning"
    )
