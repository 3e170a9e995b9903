"""The server's change history: every committed write, in commit order.

mongoeco reports each committed document change to its change-stream hub; the
:class:`RecordingHub` adapter turns those reports into :class:`ChangeEvent` records here.
Namespace events (drop, rename, dropDatabase) are appended by the wire layer after the
command succeeds. History is bounded: appending is O(1) and the oldest events fall off,
after which resuming from before them fails with ``ChangeStreamHistoryLost``.

A shadow copy of every live document is kept so that update events get an
``updateDescription`` (mongoeco only reports the post-image) and ``updateLookup`` can
answer from memory without a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import datetime
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .clock import ClusterClock, ClusterTime
from .diff import update_description

Document = dict[str, Any]
NamespaceKey = tuple[str, str]

# The paths the ``$set`` of the update being run names (the wire layer sets them):
# MongoDB reports such a field whole, even an array.
SET_PATHS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "SET_PATHS", default=frozenset()
)


@dataclass(frozen=True)
class ChangeEvent:
    """One entry of the change history."""

    seq: int
    time: ClusterTime
    wall_time: datetime.datetime
    operation_type: str
    db: str
    coll: str | None
    document_key: Document | None = None
    full_document: Document | None = None
    update_description: Document | None = None
    # updateDescription.disambiguatedPaths (shown to streams with showExpandedEvents).
    disambiguated_paths: Document | None = None
    # Post- and pre-images, kept only for collections with changeStreamPreAndPostImages.
    post_image: Document | None = None
    pre_image: Document | None = None
    to: Document | None = None  # rename target
    # The session and transaction number of the transaction that wrote it, if any.
    lsid: Document | None = None
    txn_number: int | None = None
    # Shown only to streams opened with showExpandedEvents: the collection's UUID, and
    # the description of a DDL event (create, createIndexes, dropIndexes, modify,
    # rename), which such streams alone receive (``expanded``).
    collection_uuid: uuid.UUID | None = None
    operation_description: Document | None = None
    expanded: bool = False


@dataclass
class _Shadow:
    documents: dict[NamespaceKey, dict[Any, Document]] = field(default_factory=dict)

    def namespace(self, db: str, coll: str) -> dict[Any, Document]:
        return self.documents.setdefault((db, coll), {})


class History:
    """Bounded, append-only log of change events with waiters for new events."""

    def __init__(self, *, max_events: int, clock: ClusterClock | None = None) -> None:
        if max_events < 1:
            raise ValueError("history size must be at least 1")
        self.clock = clock or ClusterClock()
        self._max_events = max_events
        self._events: deque[ChangeEvent] = deque()
        self._next_seq = 1
        # Newest cluster time whose events are no longer retained. Like an oplog, history
        # starts when the server does: nothing before that can be resumed from.
        self.lost_through: ClusterTime | None = self.clock.now()
        self._shadow = _Shadow()
        self._images_enabled: set[NamespaceKey] = set()
        self._uuids: dict[NamespaceKey, uuid.UUID] = {}  # given at first sight
        self._new_event = asyncio.Event()
        # (lsid, txnNumber) while a transaction's changes are being committed.
        self._transaction: tuple[Document, int] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- reading ----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest retained event (next one if history is empty)."""
        return self._events[0].seq if self._events else self._next_seq

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def events_from(self, seq: int) -> Iterator[ChangeEvent]:
        """Retained events with sequence number >= ``seq``, oldest first."""
        if not self._events:
            return iter(())
        start = max(0, seq - self._events[0].seq)
        return (self._events[i] for i in range(start, len(self._events)))

    def seq_at_or_after(self, time: ClusterTime) -> int:
        """Sequence number of the first event at or after ``time``."""
        return self.seq_after(time.just_before())

    def seq_after(self, time: ClusterTime) -> int:
        """Sequence number of the first event strictly after ``time``."""
        # Binary search: events are ordered by time.
        low, high = 0, len(self._events)
        while low < high:
            middle = (low + high) // 2
            if self._events[middle].time <= time:
                low = middle + 1
            else:
                high = middle
        return self._events[low].seq if low < len(self._events) else self._next_seq

    def lookup(self, db: str, coll: str, key: Any) -> Document | None:
        """The current committed version of a document (for ``updateLookup``)."""
        found = self._shadow.documents.get((db, coll), {}).get(key)
        return copy.deepcopy(found) if found is not None else None

    async def wait_for_event(self, after_seq: int, timeout: float) -> None:
        """Return when an event with seq >= ``after_seq`` exists or ``timeout`` passes."""
        if self._next_seq > after_seq or timeout <= 0:
            return
        self._new_event.clear()
        try:
            await asyncio.wait_for(self._new_event.wait(), timeout)
        except TimeoutError:
            return

    # -- namespace options ------------------------------------------------------------
    def set_images_enabled(self, db: str, coll: str, enabled: bool) -> None:
        if enabled:
            self._images_enabled.add((db, coll))
        else:
            self._images_enabled.discard((db, coll))

    def images_enabled(self, db: str, coll: str) -> bool:
        return (db, coll) in self._images_enabled

    # -- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def committing(self, lsid: Document, txn_number: int) -> Iterator[None]:
        """Changes recorded inside come from this transaction (events carry both ids)."""
        self._transaction = (lsid, txn_number)
        try:
            yield
        finally:
            self._transaction = None

    def record_document_change(
        self,
        *,
        operation_type: str,
        db: str,
        coll: str,
        key: Any,
        document_key: Document,
        full_document: Document | None,
    ) -> None:
        """Record an insert, update, replace or delete reported by the engine."""
        shadow = self._shadow.namespace(db, coll)
        before = shadow.get(key)
        after = copy.deepcopy(full_document) if full_document is not None else None
        images = (db, coll) in self._images_enabled
        description = ambiguous = None
        if operation_type == "delete":
            shadow.pop(key, None)
        elif after is not None:
            shadow[key] = after
        if operation_type == "update":
            description, ambiguous = update_description(
                before or {}, after or {}, set_paths=SET_PATHS.get()
            )
        self._append(
            operation_type=operation_type,
            db=db,
            coll=coll,
            document_key=copy.deepcopy(document_key),
            full_document=after if operation_type in ("insert", "replace") else None,
            update_description=description,
            disambiguated_paths=ambiguous,
            post_image=after if images and operation_type != "delete" else None,
            pre_image=before if images and operation_type != "insert" else None,
            lsid=self._transaction[0] if self._transaction else None,
            txn_number=self._transaction[1] if self._transaction else None,
            collection_uuid=self.collection_uuid(db, coll),
        )

    def collection_uuid(self, db: str, coll: str) -> uuid.UUID:
        """The UUID of a collection, as MongoDB gives one to each (a dropped and
        recreated collection gets a new one)."""
        known = self._uuids.get((db, coll))
        if known is None:  # not setdefault: a new UUID costs a system call per change
            known = self._uuids[(db, coll)] = uuid.uuid4()
        return known

    def record_ddl(
        self, operation_type: str, db: str, coll: str, description: Document | None = None
    ) -> None:
        """Record an event only showExpandedEvents streams receive (create,
        createIndexes, dropIndexes, modify)."""
        self._append(
            operation_type=operation_type,
            db=db,
            coll=coll,
            collection_uuid=self.collection_uuid(db, coll),
            operation_description=copy.deepcopy(description or {}),
            expanded=True,
        )

    def record_drop(self, db: str, coll: str) -> None:
        self._shadow.documents.pop((db, coll), None)
        self._images_enabled.discard((db, coll))
        self._append(
            operation_type="drop",
            db=db,
            coll=coll,
            collection_uuid=self._uuids.pop((db, coll), None),
        )

    def record_rename(self, db: str, coll: str, to_db: str, to_coll: str) -> None:
        moved = self._shadow.documents.pop((db, coll), None)
        self._shadow.documents.pop((to_db, to_coll), None)
        if moved is not None:
            self._shadow.documents[(to_db, to_coll)] = moved
        if (db, coll) in self._images_enabled:
            self._images_enabled.discard((db, coll))
            self._images_enabled.add((to_db, to_coll))
        to = {"db": to_db, "coll": to_coll}
        description: Document = {"to": dict(to)}
        dropped = self._uuids.pop((to_db, to_coll), None)
        if dropped is not None:
            description["dropTarget"] = dropped
        source = self._uuids.pop((db, coll), None) or uuid.uuid4()
        self._uuids[(to_db, to_coll)] = source
        self._append(
            operation_type="rename",
            db=db,
            coll=coll,
            to=to,
            collection_uuid=source,
            operation_description=description,
        )

    def record_drop_database(self, db: str, collections: list[str]) -> None:
        for coll in collections:
            self.record_drop(db, coll)
        for key in [key for key in self._shadow.documents if key[0] == db]:
            del self._shadow.documents[key]
        for key in [key for key in self._uuids if key[0] == db]:
            del self._uuids[key]
        self._append(operation_type="dropDatabase", db=db, coll=None)

    def _append(self, **fields: Any) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        event = ChangeEvent(
            seq=self._next_seq,
            time=self.clock.tick(),
            # BSON dates have millisecond precision.
            wall_time=now.replace(microsecond=now.microsecond // 1000 * 1000),
            **fields,
        )
        self._next_seq += 1
        self._events.append(event)
        while len(self._events) > self._max_events:
            self.lost_through = self._events.popleft().time
        self._notify()

    def _notify(self) -> None:
        # Engine callbacks may arrive from a worker thread; waiters live on the loop.
        loop = self.loop
        if loop is None:
            self._new_event.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._new_event.set()
        else:
            loop.call_soon_threadsafe(self._new_event.set)
