"""Feeds mongoeco's committed document changes into :class:`~.history.History`.

mongoeco (4.11.0) reports every committed insert, update, replace and delete - from
single writes, bulk writes, find-and-modify and transaction commits alike - to the
change-stream hub of its client. Replacing that hub with this adapter makes the server
record history whether or not a stream is open, without mongoeco's journal (whose
compaction made writes collapse to ~1/s) and without its token bookkeeping (where a
collection drop consumed a sequence number and silently lost the next event).
"""

from __future__ import annotations

from typing import Any

from mongoeco.change_streams import ChangeStreamHub
from mongoeco.core.bson_ordering import bson_equality_key

from .history import History

_DOCUMENT_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})


class RecordingHub(ChangeStreamHub):  # type: ignore[misc]
    """A mongoeco change-stream hub that records into a :class:`History`."""

    def __init__(self, history: History) -> None:
        super().__init__(max_retained_events=1)
        self._history = history

    def should_publish_events(self) -> bool:
        return True

    def publish(
        self,
        *,
        operation_type: str,
        db_name: str,
        coll_name: str,
        document_key: dict[str, Any],
        full_document: dict[str, Any] | None = None,
        update_description: dict[str, object] | None = None,
    ) -> None:
        # Drops arrive here as "invalidate"; the wire layer records namespace events
        # itself, after the command succeeded, so they are ignored.
        if operation_type not in _DOCUMENT_OPERATIONS:
            return
        self._history.record_document_change(
            operation_type=operation_type,
            db=db_name,
            coll=coll_name,
            key=bson_equality_key(document_key.get("_id")),
            document_key=document_key,
            full_document=full_document,
        )

    def publish_committed(self, sequence: int, payload: dict[str, Any] | None) -> None:
        if payload is not None:
            self.publish(**payload)

    def align_commit_sequence(self, next_sequence: int) -> None:
        """Sequence numbers are the history's business; nothing to align."""

    def mark_gap(self) -> None:
        """A gap in mongoeco's numbering loses nothing here."""
