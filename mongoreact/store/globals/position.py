"""The planner document's stream position: where the last leader's change stream
stopped, and the leader epoch that fences every write of the planner's state."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Final

from pymongo.collection import Collection

from ..pipelines import NOW
from ..server import token_time
from .fencing import Document, fenced_upsert

PLANNER_ID: Final = "planner"


class Saved(enum.Enum):
    """What saving the stream position did."""

    SAVED = "saved"
    # Nothing written: the planner document is older than this leader's term (its
    # epoch lower, or the document gone). The globals were restored from a backup or
    # deleted, and what the planner's state recorded since (a reconciliation owed) may
    # be lost: the caller reconciles every task (``ReconciliationStore.reset`` stamps
    # the term again), then saves again. Written first, a failure in between would
    # have lost the reconciliation for good.
    WENT_BACK = "went back"
    REFUSED = "refused"  # a later leader's state: nothing written


class StreamPositionStore:
    """The saved resume token, and the epoch the planner's state is fenced by."""

    def __init__(self, documents: Collection[Document]) -> None:
        self._collection = documents

    def load(self) -> Document | None:
        """Where the last leader's change stream stopped, if anywhere."""
        document = self._collection.find_one({"_id": PLANNER_ID}, {"resumeToken": 1})
        token = document.get("resumeToken") if document else None
        return token if isinstance(token, dict) else None

    def save(
        self,
        token: Document,
        instance_id: str,
        position_at: dt.datetime | None = None,
        *,
        epoch: int,
    ) -> Saved:
        """Remember the stream position after work up to it has been planned;
        ``position_at`` is when its last event happened (``None``: caught up, now).

        Written only over this term's planner document: the term stamped its epoch on
        it when it began (``enter_epoch``). ``REFUSED`` once a later leader has
        written, so a deposed leader cannot move the position back; ``WENT_BACK``
        when the stamp is older or gone (see ``Saved``).
        """
        update = [
            {
                "$set": {
                    "resumeToken": {"$literal": token},
                    "savedAt": NOW,
                    "streamPositionAt": position_at or NOW,
                    # The cluster time before which every change has been planned.
                    "streamTime": {"$literal": token_time(token)},
                    "savedBy": {"$literal": instance_id},
                    "leaderEpoch": epoch,
                }
            }
        ]
        this_term = {"_id": PLANNER_ID, "leaderEpoch": epoch}
        if self._collection.update_one(this_term, update).matched_count:
            return Saved.SAVED
        stamped = (self.document()).get("leaderEpoch")
        if isinstance(stamped, (int, float)) and stamped > epoch:
            return Saved.REFUSED
        return Saved.WENT_BACK

    def forget(self, *, epoch: int) -> bool:
        """Drop the stored position (after the server lost the history behind it);
        fenced by the leader ``epoch`` (``False``: a later leader's state, kept)."""
        result = self._collection.update_one(
            {"_id": PLANNER_ID, "leaderEpoch": {"$not": {"$gt": epoch}}},
            {"$unset": {"resumeToken": ""}, "$max": {"leaderEpoch": epoch}},
        )
        return (
            result.matched_count > 0
            or self._collection.count_documents({"_id": PLANNER_ID}, limit=1) == 0
        )

    def enter_epoch(self, epoch: int) -> bool:
        """Stamp the planner's state with a new leader ``epoch`` when its term begins,
        so that from then on every fenced write of an older leader is refused, even
        before this one has saved anything; ``False`` if a later epoch is there."""
        update = [{"$set": {"leaderEpoch": {"$max": [{"$ifNull": ["$leaderEpoch", 0]}, epoch]}}}]
        return fenced_upsert(self._collection, PLANNER_ID, {"leaderEpoch": epoch}, update)

    def document(self) -> Document:
        """The planner document (stream position, reconciliation, cleanup)."""
        return self._collection.find_one({"_id": PLANNER_ID}) or {}
