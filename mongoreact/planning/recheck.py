"""Re-checking time-dependent filters (``recheck_interval``).

A change stream only reports writes, so a filter such as
``{"$expr": {"$lte": ["$releaseAt", "$$NOW"]}}`` starts matching without any event.
For a task with ``recheck_interval``, the leader asks the server every interval for the
``_id``s of the documents matching the filter *now*, in batches, and plans them with the
same code as change events: documents that started matching get a run, the others are
left as they are (their snapshot did not change). The cost per interval is one filtered
query per batch of 1000 matching documents plus one planning pass per batch; index the
fields the filter uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..store.tasks import TaskStore


class Rechecker:
    """Schedules and runs the rechecks of the tasks that ask for them."""

    def __init__(self, registry: TaskRegistry, task_store: TaskStore, batch_size: int) -> None:
        self._tasks = task_store
        self._batch_size = batch_size
        now = time.monotonic()
        self._due: dict[str, float] = {}
        self._definitions: dict[str, TaskDefinition] = {}
        for definition in registry:
            if definition.recheck_interval is not None:
                self._definitions[definition.name] = definition
                self._due[definition.name] = now + definition.recheck_interval.total_seconds()

    def seconds_until_due(self) -> float | None:
        """How long until the next recheck (``None``: no task rechecks)."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - time.monotonic())

    def next_due(self) -> TaskDefinition | None:
        """A task whose recheck is due now (and schedule its next one)."""
        now = time.monotonic()
        for name, due in self._due.items():
            if due <= now:
                definition = self._definitions[name]
                assert definition.recheck_interval is not None
                self._due[name] = now + definition.recheck_interval.total_seconds()
                return definition
        return None

    def run(
        self, definition: TaskDefinition, plan: Callable[[TaskDefinition, list[Any]], None]
    ) -> Iterator[bool]:
        """Plan the documents matching now, one batch per step; ``True`` when done."""
        after: Any = None
        while True:
            ids = self._tasks.scan_ids(
                definition.collection, after, self._batch_size, where=definition.filter
            )
            if not ids:
                break
            plan(definition, ids)
            after = ids[-1]
            yield False
        yield True
