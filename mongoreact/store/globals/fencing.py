"""Writes to a globals document that a later leader's state must win over."""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]


def fenced_upsert(
    collection: Collection[Document], key: str, fences: dict[str, int], update: list[Document]
) -> bool:
    """Apply ``update`` to document ``key`` (creating it) unless one of its
    ``fences`` fields holds a later value than given; whether it was applied."""
    query: Document = {"_id": key}
    query.update((field, {"$not": {"$gt": value}}) for field, value in fences.items())
    try:
        collection.update_one(query, update, upsert=True)
        return True
    except DuplicateKeyError:
        # The document exists with a later epoch (the upsert then tries to insert
        # the key again), or two upserts raced: one plain try tells which.
        return collection.update_one(query, update).matched_count == 1
