"""The globals collection: the documents every instance shares, one small store per
kind (the lease, the stream position, reconciliation, tasks collections' identities,
cleanup bookkeeping, published specs, throttles, pushed metrics, presence)."""

from __future__ import annotations

from pymongo.database import Database

from .cleanup import CleanupStateStore
from .collections import TasksCollectionIdStore
from .fencing import Document
from .lease import LEADER_ID, Lease, LeaseStore
from .metrics import MetricsStore
from .position import PLANNER_ID, Saved, StreamPositionStore
from .presence import PresenceStore
from .reconciliation import Checkpoint, ReconciliationStore
from .specs import Publication, SpecStore
from .throttles import ThrottleStore

__all__ = [
    "LEADER_ID",
    "PLANNER_ID",
    "Checkpoint",
    "CleanupStateStore",
    "GlobalsStore",
    "Lease",
    "LeaseStore",
    "MetricsStore",
    "PresenceStore",
    "Publication",
    "ReconciliationStore",
    "Saved",
    "SpecStore",
    "StreamPositionStore",
    "TasksCollectionIdStore",
    "ThrottleStore",
]


class GlobalsStore:
    """The globals collection's stores, over one collection. Each component takes the
    one it needs; this is what ``start()`` builds them from."""

    def __init__(self, database: Database[Document], collection: str) -> None:
        documents = database[collection]
        self.lease = LeaseStore(documents)
        self.position = StreamPositionStore(documents)
        self.reconciliation = ReconciliationStore(documents)
        self.tasks_collections = TasksCollectionIdStore(documents)
        self.cleanup = CleanupStateStore(documents)
        self.specs = SpecStore(documents)
        self.throttles = ThrottleStore(documents)
        self.metrics = MetricsStore(documents)
        self.presence = PresenceStore(documents)
