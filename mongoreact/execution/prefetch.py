"""Reading the source documents of a claimed batch in one query.

A handler that calls ``ctx.get_document()`` costs one more round trip per task. Once a
task's handler is seen reading its document, the dispatcher reads the documents of each
batch it claims for that task in one query, with each record's own late-binding check,
and ``get_document()`` answers from it - once, within ``records.FRESH_FOR`` of the
read, without a projection or a session. That answer is what the handler's own read would have
returned at the moment of the batch read, which comes after the claim: a change after
it that matters to the task (the filter, the watched values) makes the record
``processing_dirty``, so the task runs again on the new data, exactly as for a change
just after a handler's own read. Otherwise the handler reads the database as before.
"""

from __future__ import annotations

import threading
from typing import Final

import attrs

from ..config.registry import TaskRegistry
from ..records import ClaimedTask, Prefetched, source_key
from ..store.protocols import WorkStore

MIN_BATCH: Final = 2  # a single claim gains nothing from being read ahead


class SourcePrefetch:
    """Learns which tasks' handlers read their documents, and reads them in batches."""

    def __init__(self, registry: TaskRegistry, store: WorkStore) -> None:
        self._registry = registry
        self._store = store
        self._readers: set[str] = set()
        self._lock = threading.Lock()

    def note_read(self, task: str) -> None:
        """A handler of ``task`` read its document: read ahead for this task from now."""
        if task not in self._readers:
            with self._lock:
                self._readers.add(task)

    def fill(self, claims: list[ClaimedTask]) -> list[ClaimedTask]:
        """``claims``, those of reading tasks with their documents attached."""
        by_task: dict[str, list[int]] = {}
        for index, claim in enumerate(claims):
            task = claim.record["task"]
            if task in self._readers:
                by_task.setdefault(task, []).append(index)
        filled = list(claims)
        for task, indexes in by_task.items():
            if len(indexes) < MIN_BATCH:
                continue
            records = [claims[i].record for i in indexes]
            # One claim batch: one cluster time (the newest if several came together).
            after = max((c.read_after for c in claims if c.read_after is not None), default=None)
            found = self._store.fetch_sources(self._registry[task], records, after=after)
            for i in indexes:
                document = found.get(source_key(claims[i].record["sourceDocId"]))
                filled[i] = attrs.evolve(claims[i], prefetched=Prefetched(document))
        return filled
