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

Reads by ``_id`` get the same treatment. mongoeco looks up a plain ``{_id: value}`` by
storage key, but scans the whole collection for ``{_id: {$in: [...]}}`` (how the planner
and the reconciler fetch a batch of documents) and for an ``_id`` that is absent. For
``_id`` values whose storage key is exact (see ``_exact_id``), both become lookups.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import bson
from bson import Binary, ObjectId
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.identity import id_contains_numeric_value
from mongoeco.core.query_plan import AndCondition, EqualsCondition, InCondition
from mongoeco.engines._memory_collection import MemoryCollection
from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.virtual_indexes import document_in_virtual_index
from mongoeco.errors import OperationFailure

# _id types whose BSON equality is plain Python equality of one type: for them the
# storage key of a query value is the storage key of every document it matches. Numbers
# (1 == 1.0 == Int64(1) under different keys) and documents are left to mongoeco.
_EXACT_ID_TYPES = (ObjectId, str, uuid.UUID, datetime.datetime, Binary, bytes)


def _exact_id(value: Any) -> bool:
    return isinstance(value, _EXACT_ID_TYPES) and not isinstance(value, bool)


def _id_lookup_values(plan: Any) -> tuple[Any, ...] | None:
    """The ``_id`` values ``plan`` is restricted to, or ``None`` if it is not (or if
    one of them is not an exact key)."""
    if isinstance(plan, AndCondition):
        for clause in plan.clauses:
            values = _id_lookup_values(clause)
            if values is not None:
                return values
        return None
    if isinstance(plan, EqualsCondition) and plan.field == "_id":
        found: tuple[Any, ...] = (plan.value,)
    elif isinstance(plan, InCondition) and plan.field == "_id":
        found = plan.values
    else:
        return None
    return found if all(_exact_id(value) for value in found) else None


MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def _check_size(document: dict[str, Any], *, updating: bool) -> None:
    """Refuse a document over 16 MiB as MongoDB does (17419 for the result of an update,
    10334 for an insert)."""
    try:
        size = len(bson.encode(document))
    except Exception:  # a value only mongoeco knows: leave it to mongoeco
        return
    if size <= MAX_DOCUMENT_BYTES:
        return
    if updating:
        raise OperationFailure(
            f"Resulting document after update is larger than {MAX_DOCUMENT_BYTES}", code=17419
        )
    raise OperationFailure(
        f"object to insert too large. size in bytes: {size}, max size: {MAX_DOCUMENT_BYTES}",
        code=10334,
    )


class FastMemoryEngine(MemoryEngine):  # type: ignore[misc]
    """MemoryEngine whose unique checks and ``_id`` reads are lookups, not scans."""

    def _candidate_items_for_plan_locked(
        self, coll: Any, query_plan: Any, **options: Any
    ) -> list[tuple[Any, Any]]:
        # mongoeco 4.11.0: every read (find, aggregate's leading $match, update, delete)
        # takes its candidates from here, and then matches each against the full plan,
        # so a superset is safe; ours is exact.
        values = _id_lookup_values(query_plan)
        if values is None or options.get("collation") is not None:
            return super()._candidate_items_for_plan_locked(coll, query_plan, **options)  # type: ignore[no-any-return]
        keys = {self._storage_key(value) for value in values}
        if isinstance(coll, MemoryCollection):
            ordered = coll.ordered_keys(keys, limit=options.get("natural_order_limit"))
        else:
            ordered = [key for key in coll if key in keys]
        return [(key, coll[key]) for key in ordered]

    def _ensure_unique_indexes(
        self, db_name: str, coll_name: str, candidate: dict[str, Any], **options: Any
    ) -> None:
        # mongoeco 4.11.0 checks every document it writes here (inserts, updates and
        # replacements alike) and nowhere enforces MongoDB's 16 MiB document limit.
        _check_size(candidate, updating=options.get("exclude_storage_key") is not None)
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
