"""mongoeco's in-memory engine with the per-write full scan removed.

mongoeco 4.11.0 ``MemoryEngine._ensure_unique_indexes`` walks every document of the
collection on each single-document insert to compare ``_id`` values by BSON equality
(``scan_payload_id``). That is only needed for numeric ``_id`` values, where 1, 1.0 and
Int64(1) are equal but stored under different keys; for every other ``_id`` type the
storage-key lookup it also does is exact. Skipping the scan for non-numeric ids makes
inserts O(1) in the collection size (measured in docs/embedded-server.md).
"""

from __future__ import annotations

from typing import Any

from mongoeco.core.identity import id_contains_numeric_value
from mongoeco.engines.memory import MemoryEngine


class FastMemoryEngine(MemoryEngine):  # type: ignore[misc]
    """MemoryEngine whose unique ``_id`` check is O(1) for non-numeric ids."""

    def _ensure_unique_indexes(
        self, db_name: str, coll_name: str, candidate: dict[str, Any], **options: Any
    ) -> None:
        if options.get("scan_payload_id") and not id_contains_numeric_value(candidate.get("_id")):
            options["scan_payload_id"] = False
        super()._ensure_unique_indexes(db_name, coll_name, candidate, **options)
