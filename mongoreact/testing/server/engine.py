"""mongoreact's changes to mongoeco's in-memory engine: unique checks without full scans.

mongoeco 4.11.0 ``MemoryEngine._ensure_unique_indexes`` walks every document of the
collection on each write in two cases:

- on a single-document insert, to compare ``_id`` values by BSON equality
  (``scan_payload_id``). That is only needed for numeric ``_id`` values, where 1, 1.0 and
  Int64(1) are equal but stored under different keys; for every other ``_id`` type the
  storage-key lookup it also does is exact.
- for every *compound* unique index (it uses its index buckets for single-field ones
  only), on inserts and updates alike. A compound index's buckets are keyed by the
  tuple of the fields' BSON equality keys (``MemoryEngine._index_key``), so a lookup
  there is exact as long as no indexed field holds an array (then only the array's
  first element is bucketed, and the full scan stays).

Both checks become lookups, so writes are O(1) in the collection size (measured in
docs/embedded-server.md).
"""

from __future__ import annotations

from typing import Any

from mongoeco.core.filtering import QueryEngine
from mongoeco.core.identity import id_contains_numeric_value
from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.virtual_indexes import document_in_virtual_index


class FastMemoryEngine(MemoryEngine):  # type: ignore[misc]
    """MemoryEngine whose unique checks are lookups, not scans."""

    def _ensure_unique_indexes(
        self, db_name: str, coll_name: str, candidate: dict[str, Any], **options: Any
    ) -> None:
        if options.get("scan_payload_id") and not id_contains_numeric_value(candidate.get("_id")):
            options["scan_payload_id"] = False
        indexes_view = options.get("indexes_view")
        source = self._indexes if indexes_view is None else indexes_view
        indexes = source.get(db_name, {}).get(coll_name, [])
        remaining = [
            index
            for index in indexes
            if not self._checked_by_lookup(db_name, coll_name, candidate, index, options)
        ]
        if len(remaining) != len(indexes):
            options["indexes_view"] = {db_name: {coll_name: remaining}}
        super()._ensure_unique_indexes(db_name, coll_name, candidate, **options)

    def _checked_by_lookup(
        self,
        db_name: str,
        coll_name: str,
        candidate: dict[str, Any],
        index: Any,
        options: dict[str, Any],
    ) -> bool:
        """Check one compound unique index through its buckets; ``False`` if it cannot
        be (left to mongoeco's scan)."""
        fields = index["fields"]
        if not index.get("unique") or len(fields) < 2 or index.get("collation") is not None:
            return False
        index_data_view = options.get("index_data_view")
        index_map = (
            (self._index_data if index_data_view is None else index_data_view)
            .get(db_name, {})
            .get(coll_name, {})
            .get(index["name"])
        )
        if index_map is None:
            return False
        for field in fields:
            values = QueryEngine.extract_values(candidate, field)
            if len(values) > 1 or any(isinstance(v, list) for v in values):
                return False
        if not document_in_virtual_index(candidate, index):
            return True
        storage_view = options.get("storage_view")
        storage = self._storage if storage_view is None else storage_view
        coll = storage.get(db_name, {}).get(coll_name, {})
        exclude = options.get("exclude_storage_key")
        if exclude is not None and exclude not in coll:
            exclude = self._storage_key(exclude)
        key = self._index_key(candidate, fields)
        matches = index_map.get(key)
        if matches and any(m != exclude for m in matches):
            raise self._unique_key_error(
                f"Duplicate key for unique index '{index['name']}': {fields}={key!r}",
                f"{db_name}.{coll_name}",
                candidate,
                index=index,
                conflict=key,
            )
        return True
