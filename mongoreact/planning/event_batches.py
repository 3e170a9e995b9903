"""Collecting change events into planning batches.

An event that comes after a quiet spell (no event for a window's length) is due at once:
a lone write is planned without waiting. An event that follows others closely opens a
short sliding window instead: every further event extends it, but never beyond
``max_wait`` after the first, and a batch that reaches ``max_size`` distinct documents
is due at once. So sparse writes get the lowest latency and bursts get large batches.
Repeated changes to one document collapse into one entry, and only ``_id``s are kept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import bson


@attrs.define
class Batch:
    """Documents to plan, per source collection; ``deleted`` holds those last seen deleted."""

    ids: dict[str, dict[bytes, Any]] = attrs.field(factory=dict)
    deleted: dict[str, set[bytes]] = attrs.field(factory=dict)
    token: dict[str, Any] | None = None
    position_at: dt.datetime | None = None  # when the last event happened (server time)
    cluster_time: Any = None  # the last event's cluster time (a bson Timestamp)

    def __len__(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def deleted_ids(self, collection: str) -> list[Any]:
        """The ids of ``collection`` whose latest event was a delete."""
        ids = self.ids.get(collection, {})
        return [ids[key] for key in self.deleted.get(collection, ())]


def id_key(doc_id: Any) -> bytes:
    """A hashable key for any BSON ``_id`` (dicts and lists are not hashable)."""
    return bson.encode({"_": doc_id})


class EventBatcher:
    """Decides when the collected events are due for planning. Times are monotonic."""

    def __init__(self, window: float, max_wait: float, max_size: int) -> None:
        self._window, self._max_wait, self._max_size = window, max_wait, max_size
        self._batch = Batch()
        self._first: float | None = None
        self._last: float | None = None
        self._previous: float | None = None  # the last event of the batches before
        self._after_quiet = False  # the batch's first event came after a quiet spell

    def add(
        self,
        collection: str,
        doc_id: Any,
        *,
        deleted: bool,
        token: dict[str, Any],
        now: float,
        cluster_time: Any = None,
    ) -> None:
        """Record one change event."""
        key = id_key(doc_id)
        self._batch.ids.setdefault(collection, {})[key] = doc_id
        gone = self._batch.deleted.setdefault(collection, set())
        if deleted:
            gone.add(key)
        else:
            gone.discard(key)
        self._batch.token = token
        if cluster_time is not None and hasattr(cluster_time, "as_datetime"):
            self._batch.position_at = cluster_time.as_datetime()
            self._batch.cluster_time = cluster_time
        if self._first is None:
            self._first = now
            self._after_quiet = self._previous is None or now - self._previous >= self._window
        self._last = now

    def __len__(self) -> int:
        return len(self._batch)

    def due_at(self) -> float | None:
        """When the batch must be planned (``None`` while empty)."""
        if self._first is None or self._last is None:
            return None
        if len(self._batch) >= self._max_size or self._after_quiet:
            return self._first
        return min(self._last + self._window, self._first + self._max_wait)

    def is_due(self, now: float) -> bool:
        """Whether the batch should be planned now."""
        due = self.due_at()
        return due is not None and now >= due

    def peek(self) -> Batch:
        """The batch so far (kept until ``clear``, so a failed planning is retried)."""
        return self._batch

    def forget_position(self) -> None:
        """Keep the batch's documents but not its stream position (the stream it came
        from has been given up)."""
        self._batch.token = None
        self._batch.position_at = None

    def clear(self) -> None:
        """Forget the batch after it was planned."""
        if self._last is not None:
            self._previous = self._last
        self._batch, self._first, self._last = Batch(), None, None
