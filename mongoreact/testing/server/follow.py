"""Structures the embedded server keeps beside a collection, exact after every write.

A :class:`Follower` describes one collection object at one state of its contents:
mongoeco 4.11.0 stores a collection as a ``MemoryCollection`` whose contents are an
immutable persistent map (``_values``) that every write replaces. The follower keeps
the collection and that root. Writes through the engine's two storage methods
(``_set_storage_document_locked``, ``_delete_storage_document_locked``) are applied
incrementally and move the root along; any other change (a rolled-back write, a
transaction's commit swapping the collection, a drop) leaves the roots different, and
the next use rebuilds the follower from the collection. So a follower is never stale:
it is either in sync with the collection or rebuilt before it is read.

A follower can find a document it cannot describe exactly; it then stops serving
(``servable`` is false, callers fall back to mongoeco) until its next rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mongoeco.core.identity import id_contains_numeric_value

Doc = dict[str, Any]


class Unservable(Exception):
    """A document holds a value this follower cannot describe exactly."""


class Follower:
    """Base class: the sync protocol; subclasses say what they keep per document."""

    def __init__(self) -> None:
        self.collection: Any = None
        self.root: Any = None
        self.servable = False

    def ready(self, collection: Any, borrow: Callable[[Any], Any]) -> bool:
        """Bring the follower in sync with ``collection``; whether it can serve."""
        if self.collection is not collection or self.root is not collection._values:
            self._rebuild(collection, borrow)
        return self.servable

    def _rebuild(self, collection: Any, borrow: Callable[[Any], Any]) -> None:
        self.collection, self.root = collection, collection._values
        self._clear()
        try:
            for storage_key, data in collection.items():
                self._add(storage_key, borrow(data))
        except Unservable:
            self.servable = False
            self._clear()
            return
        self._built()
        self.servable = True

    def written(
        self, collection: Any, before: Any, storage_key: Any, document: dict[str, Any] | None
    ) -> None:
        """Follow one write to ``collection`` whose root was ``before`` (``document`` is
        ``None`` for a delete)."""
        if self.collection is not collection or self.root is not before:
            return  # not the collection described, or already out of sync: rebuilt on use
        self.root = collection._values
        if not self.servable:
            return
        self._remove(storage_key)
        if document is None:
            return
        try:
            self._add(storage_key, document, incremental=True)
        except Unservable:
            self.servable = False
            self._clear()

    def _clear(self) -> None:
        raise NotImplementedError

    def _add(self, storage_key: Any, document: Doc, *, incremental: bool = False) -> None:
        raise NotImplementedError

    def _remove(self, storage_key: Any) -> None:
        raise NotImplementedError

    def _built(self) -> None:
        """Called once a rebuild has added every document."""


def plain_number(value: Any) -> bool:
    """An int or float ``_id`` (not NaN): Python equality is BSON equality for these,
    so 1, 1.0 and Int64(1) are one key, as in MongoDB."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


class NumericIds(Follower):
    """The numeric ``_id`` values of a collection, by BSON equality.

    mongoeco stores 1, 1.0 and Int64(1) under different keys and so finds a duplicate
    numeric ``_id`` by reading every document; this set answers in O(1). A numeric id of
    another type (Decimal128) makes it unservable.
    """

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[Any, int] = {}  # numeric _id -> documents holding it
        self._by_key: dict[Any, Any] = {}  # storage key -> its numeric _id

    def __contains__(self, value: Any) -> bool:
        return value in self._counts

    def _clear(self) -> None:
        self._counts, self._by_key = {}, {}

    def _add(self, storage_key: Any, document: Doc, *, incremental: bool = False) -> None:
        doc_id = document.get("_id")
        if plain_number(doc_id):
            self._counts[doc_id] = self._counts.get(doc_id, 0) + 1
            self._by_key[storage_key] = doc_id
        elif id_contains_numeric_value(doc_id):
            raise Unservable  # a Decimal128 or a document holding numbers

    def _remove(self, storage_key: Any) -> None:
        doc_id = self._by_key.pop(storage_key, None)
        if doc_id is None:
            return
        left = self._counts[doc_id] - 1
        if left:
            self._counts[doc_id] = left
        else:
            del self._counts[doc_id]
