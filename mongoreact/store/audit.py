"""The audit log: one document per operator action (retry, discard, defer, pause,
resume, a cron run requested), from the dashboard, the CLI or a script."""

from __future__ import annotations

from typing import Any, Final

from bson import ObjectId, json_util
from pymongo import DESCENDING, IndexModel
from pymongo.database import Database

Document = dict[str, Any]
AUDIT_SUFFIX: Final = "_audit"
_AT_INDEX: Final = IndexModel([("at", DESCENDING)], name="mongoreact_audit_at")


class AuditStore:
    """``<globals collection>_audit``: who did what to how many records, and when (the
    server's clock)."""

    def __init__(self, database: Database[Document], globals_collection: str) -> None:
        self._collection = database[globals_collection + AUDIT_SUFFIX]

    def record(
        self, *, actor: str, role: str, action: str, scope: Document, count: int, via: str
    ) -> None:
        """Log one action. The scope is kept as Extended JSON text: a source filter's
        operators are not field names a document may hold."""
        self._collection.create_indexes([_AT_INDEX])  # idempotent, and rare
        entry = {
            "actor": actor,
            "role": role,
            "action": action,
            "scope": json_util.dumps(scope, sort_keys=True, default=str),
            "count": count,
            "via": via,
        }
        self._collection.update_one(
            {"_id": ObjectId()}, {"$setOnInsert": entry, "$currentDate": {"at": True}}, upsert=True
        )

    def recent(self, limit: int) -> list[Document]:
        """The ``limit`` latest actions, newest first."""
        return list(self._collection.find({}, {"_id": 0}).sort("at", DESCENDING).limit(limit))
