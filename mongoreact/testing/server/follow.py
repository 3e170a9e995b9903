"""Structures the embedded server keeps beside a collection, exact after every write.

A :class:`Follower` describes one collection object at one state of its contents:
mongoeco 4.11.0 stores a collection as a ``MemoryCollection`` whose contents are an
immutable persistent map (``_values``) that every write replaces. The follower keeps
the collection and that root. Writes through the engine's two storage methods
(``_set_storage_document_locked``, ``_delete_storage_document_locked``) are applied
incrementally and move the root along; any other change (a rolled-back write, a
transaction's commit swapping the collection, a drop) leaves the roots different, and
the follower is rebuilt from the collection. So a follower is never stale: it is either
in sync with the collection or not used.

A (re)build runs as its own task on the server's event loop and yields as it goes, so
describing 100 000 documents (a second or two) stalls no connection; until it is done,
reads are answered as mongoeco answers them.

A transaction writes to its own copy of the collection, which replaces the collection
when it commits. A follower records the writes to such a copy (a *branch*, recognised
by its first write starting from the contents the follower describes) and, when the
copy has become the collection with no write unseen, applies them instead of
rebuilding; any doubt still means a rebuild.

A follower can find a document it cannot describe exactly; it then stops serving
(``servable`` is false, callers fall back to mongoeco) until its next rebuild.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Awaitable, Callable
from typing import Any

from mongoeco.core.bson_scalars import unwrap_bson_numeric
from mongoeco.core.identity import id_contains_numeric_value

Doc = dict[str, Any]


class Unservable(Exception):
    """A document holds a value this follower cannot describe exactly."""


# Transactions' copies of a collection followed at once (older ones are forgotten, and
# a commit of theirs then costs a rebuild).
MAX_BRANCHES = 8


class _Branch:
    """A copy of the described collection (a transaction's view), with the writes made
    to it since it was taken from the described contents (``base``)."""

    __slots__ = ("base", "collection", "root", "writes")

    def __init__(self, collection: Any, base: Any) -> None:
        self.collection, self.base, self.root = collection, base, base
        self.writes: list[tuple[Any, Doc | None]] = []


class Follower(abc.ABC):
    """Base class: the sync protocol; subclasses say what they keep per document."""

    def __init__(self) -> None:
        self.collection: Any = None
        self.root: Any = None
        self.servable = False
        self.building = False
        self._branches: dict[int, _Branch] = {}
        self._pending: list[tuple[Any, Doc | None]] = []

    def usable(self, collection: Any) -> bool:
        """Whether the follower describes ``collection`` as it is now and can serve;
        catches up with a committed transaction's copy, never rebuilds (see
        :meth:`build`)."""
        if self.collection is collection and self.root is collection._values:
            return self.servable and not self.building
        branch = self._branches.get(id(collection))
        if (
            branch is not None
            and not self.building
            and branch.collection is collection
            and branch.root is collection._values
            and branch.base is self.root
        ):
            # A transaction committed: its copy, whose every write we saw, taken from
            # what we describe, is now the collection. Apply its writes, not a rebuild.
            self.collection, self.root = collection, collection._values
            self._branches.clear()
            for storage_key, document in branch.writes:
                self._apply(storage_key, document)
            return self.servable
        return False

    async def build(
        self, collection: Any, borrow: Callable[[Any], Any], breathe: Callable[[], Awaitable[None]]
    ) -> None:
        """Describe ``collection`` from its current contents, yielding to the event loop
        as it goes (``breathe``); writes made meanwhile are applied at the end."""
        self.collection, self.root = collection, collection._values
        self.building, self.servable = True, False
        self._branches.clear()
        self._pending = []
        self._clear()
        contents = collection.copy()  # O(1): the persistent map at self.root, unchanging
        try:
            for count, (storage_key, data) in enumerate(contents.items()):
                self._add(storage_key, borrow(data))
                if count % 256 == 0:
                    await breathe()
        except Unservable:
            self._clear()
            return
        finally:
            self.building = False
        self._built()
        self.servable = True
        for storage_key, document in self._pending:
            self._apply(storage_key, document)
        self._pending = []

    def follows(self, collection: Any, before: Any) -> bool:
        """Whether a write to ``collection`` whose root was ``before`` concerns us."""
        return (
            self.collection is collection
            or (before is self.root and self.collection is not None)
            or id(collection) in self._branches
        )

    def written(self, collection: Any, before: Any, storage_key: Any, document: Doc | None) -> None:
        """Follow one write to ``collection`` whose root was ``before`` (``document`` is
        ``None`` for a delete)."""
        if self.collection is collection:
            if self.root is before:  # otherwise already out of sync: rebuilt on use
                self.root = collection._values
                self._apply(storage_key, document)
            return
        branch = self._branches.get(id(collection))
        if branch is None and before is self.root and self.collection is not None:
            if len(self._branches) >= MAX_BRANCHES:
                del self._branches[next(iter(self._branches))]
            branch = self._branches[id(collection)] = _Branch(collection, self.root)
        if branch is not None and branch.collection is collection and branch.root is before:
            branch.writes.append((storage_key, document))
            branch.root = collection._values

    def _apply(self, storage_key: Any, document: Doc | None) -> None:
        if self.building:
            self._pending.append((storage_key, document))
            return
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

    @abc.abstractmethod
    def _clear(self) -> None:
        """Forget every document."""

    @abc.abstractmethod
    def _add(self, storage_key: Any, document: Doc, *, incremental: bool = False) -> None:
        """Describe one more document (``incremental``: after the build); raise
        ``Unservable`` for one that cannot be described exactly."""

    @abc.abstractmethod
    def _remove(self, storage_key: Any) -> None:
        """Forget one document (no-op if it is not described)."""

    def _built(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called once a rebuild has added every document."""


def number_of(value: Any) -> int | float | None:
    """The int or float an ``_id`` is (mongoeco keeps a long or a double the client
    typed as such in a wrapper, ``BsonInt64`` or ``BsonDouble``); ``None`` for anything
    else, NaN and Decimal128 included. Python equality is BSON equality for these, so
    1, 1.0 and Int64(1) are one key, as in MongoDB."""
    value = unwrap_bson_numeric(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def plain_number(value: Any) -> bool:
    """An int or float ``_id``, wrapped or not (see ``number_of``)."""
    return number_of(value) is not None


class NumericIds(Follower):
    """The numeric ``_id`` values of a collection, by BSON equality.

    mongoeco stores 1, 1.0 and Int64(1) under different keys, and so finds a duplicate
    numeric ``_id`` by reading every document, and reads every document for a ``find``
    by a numeric ``_id``; this map answers both in O(1): the storage keys of the
    documents whose ``_id`` equals a number. A numeric id of another type (Decimal128)
    makes it unservable.
    """

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[Any, set[Any]] = {}  # numeric _id -> storage keys holding it
        self._by_key: dict[Any, Any] = {}  # storage key -> its numeric _id

    def __contains__(self, value: Any) -> bool:
        return number_of(value) in self._keys

    def keys_for(self, value: Any) -> set[Any]:
        """Storage keys of the documents whose ``_id`` equals the number ``value``."""
        return self._keys.get(number_of(value), set())

    def stored_id(self, value: Any) -> Any:
        """The ``_id`` as stored (1.0 for a query by 1, say) of the document whose
        ``_id`` equals the number ``value``; ``None`` if there is none."""
        for key in self._keys.get(number_of(value), ()):
            return self._by_key[key]
        return None

    def _clear(self) -> None:
        self._keys, self._by_key = {}, {}

    def _add(self, storage_key: Any, document: Doc, *, incremental: bool = False) -> None:
        doc_id = document.get("_id")
        number = number_of(doc_id)
        if number is not None:
            self._keys.setdefault(number, set()).add(storage_key)
            self._by_key[storage_key] = doc_id
        elif id_contains_numeric_value(doc_id):
            raise Unservable  # a Decimal128 or a document holding numbers

    def _remove(self, storage_key: Any) -> None:
        doc_id = self._by_key.pop(storage_key, None)
        if doc_id is None:
            return
        number = number_of(doc_id)
        keys = self._keys[number]
        keys.discard(storage_key)
        if not keys:
            del self._keys[number]
