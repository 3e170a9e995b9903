"""Sorted reads served in index order: the embedded server's ordered indexes.

mongoeco 4.11.0 answers a sorted ``find`` or ``find_one_and_update`` by matching every
candidate document and sorting them all, however small the limit: a claim over 10 000
pending task records cost 126 ms, and keyset paging by ``_id`` was a scan and a sort per
page. MongoDB walks an index instead, in the order the sort asks for, and stops at the
limit. This module does the same.

An :class:`OrderedIndex` holds, for one declared index (or ``_id``), the collection's
documents sorted by the index's fields, grouped by the values of the fields the query
pins by equality (the claim's ``task``). :func:`choose` finds an index that serves a
query's filter and sort; :meth:`OrderedIndex.walk` yields storage keys in sort order
from the range the filter allows, and the engine matches each against the full filter
until it has as many as the limit asks for.

An ordered index is a ``follow.Follower``: exact after every write, rebuilt when a
write it did not see (a rollback, a transaction's commit) changed the collection.

Only what can be ordered exactly is served: ascending index fields, scalar values of
the types :func:`order_key` knows, no collation. Everything else (an array in an
indexed field, a ``Decimal128``, a sort no index matches) is left to mongoeco.
"""

from __future__ import annotations

import bisect
import datetime
import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Any

from mongoeco.core.query_plan import (
    AndCondition,
    EqualsCondition,
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    InCondition,
    LessThanCondition,
)

from .brackets import COMPARISONS
from .follow import Doc, Follower, Unservable

OrderKey = tuple[Any, ...]
# An entry: (keys of the sort fields, insertion sequence, storage key). The sequence
# breaks ties, so storage keys (of mixed types) are never compared.
Entry = tuple[tuple[OrderKey, ...], int, Any]

_MISSING = object()
# MongoDB's BSON comparison order of the types served here (null and missing sort alike).
_NULL, _NUMBER, _STRING, _OBJECT_ID, _BOOL, _DATE = 1, 3, 4, 8, 9, 10


def order_key(value: Any) -> OrderKey | None:
    """``value``'s place in MongoDB's sort order, or ``None`` if not served here."""
    if value is None or value is _MISSING:
        return (_NULL,)
    if isinstance(value, bool):
        return (_BOOL, value)
    if isinstance(value, int):
        return (_NUMBER, value)
    if isinstance(value, float):
        return None if math.isnan(value) else (_NUMBER, value)
    if isinstance(value, str):
        return (_STRING, value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return (_DATE, value)
    binary = getattr(value, "binary", None)
    if type(value).__name__ == "ObjectId" and isinstance(binary, bytes):
        return (_OBJECT_ID, binary)
    return None


def _field_key(document: dict[str, Any], path: str) -> OrderKey | None:
    value: Any = document
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif value is _MISSING:
            break
        else:  # a path through an array or a scalar: multikey, not served
            return None
    if isinstance(value, (list, dict)):
        return None
    return order_key(value)


class OrderedIndex(Follower):
    """One collection's documents in the order of ``prefix + sort`` fields, grouped by
    the values of the ``prefix`` fields."""

    def __init__(self, prefix: tuple[str, ...], sort: tuple[str, ...]) -> None:
        super().__init__()
        self.prefix = prefix
        self.sort = sort
        self._clear()

    def _clear(self) -> None:
        self._buckets: dict[tuple[OrderKey, ...], list[Entry]] = {}
        self._placed: dict[Any, tuple[tuple[OrderKey, ...], Entry]] = {}
        self._sequence = itertools.count()

    def _built(self) -> None:
        for entries in self._buckets.values():
            entries.sort()

    def _remove(self, storage_key: Any) -> None:
        placed = self._placed.pop(storage_key, None)
        if placed is None:
            return
        group, entry = placed
        entries = self._buckets[group]
        del entries[bisect.bisect_left(entries, entry)]
        if not entries:
            del self._buckets[group]

    def _add(self, storage_key: Any, document: Doc, *, incremental: bool = False) -> None:
        group = self._keys(document, self.prefix)
        entry = (self._keys(document, self.sort), next(self._sequence), storage_key)
        entries = self._buckets.setdefault(group, [])
        if incremental:
            bisect.insort(entries, entry)
        else:
            entries.append(entry)
        self._placed[storage_key] = (group, entry)

    @staticmethod
    def _keys(document: dict[str, Any], fields: tuple[str, ...]) -> tuple[OrderKey, ...]:
        keys = tuple(_field_key(document, field) for field in fields)
        if any(key is None for key in keys):
            raise Unservable
        return keys  # type: ignore[return-value]

    def members(self, groups: list[tuple[OrderKey, ...]]) -> Iterator[Any]:
        """Storage keys of every document in ``groups``."""
        for group in groups:
            for _, _, storage_key in self._buckets.get(group, ()):
                yield storage_key

    def walk(
        self, groups: list[tuple[OrderKey, ...]], bounds: Bounds, *, descending: bool
    ) -> Iterator[Any]:
        """Storage keys of ``groups`` whose first sort field is within ``bounds``, in
        sort order (merged across groups)."""
        streams = [self._walk_group(g, bounds, descending=descending) for g in groups]
        if len(streams) == 1:
            return (storage_key for _, _, storage_key in streams[0])
        merged = heapq.merge(*streams, reverse=descending)
        return (storage_key for _, _, storage_key in merged)

    def _walk_group(
        self, group: tuple[OrderKey, ...], bounds: Bounds, *, descending: bool
    ) -> Iterator[Entry]:
        entries = self._buckets.get(group, [])
        low = 0 if bounds.low is None else bisect.bisect_left(entries, ((bounds.low,),))
        high = (
            len(entries)
            if bounds.high is None
            else bisect.bisect_right(entries, ((bounds.high, _AFTER_ALL),))
        )
        positions = range(high - 1, low - 1, -1) if descending else range(low, high)
        for position in positions:
            entry = entries[position]
            if bounds.admits(entry[0][0]):
                yield entry


class _AfterAll:
    """Sorts after every order key (the upper probe of an inclusive bound)."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True


_AFTER_ALL = _AfterAll()


class Bounds:
    """The range a filter allows on the first sort field.

    A comparison in a MongoDB query only matches values of the bound's own type
    bracket (``$lte: date`` never matches null or a number), so a one-sided range
    still ends at its bracket: the claim skips every finished record (``nextRunAt``
    null) without reading it.
    """

    def __init__(self) -> None:
        self.low: OrderKey | None = None
        self.high: OrderKey | None = None
        self.low_open = False
        self.high_open = False

    def narrow(self, node: Any) -> bool:
        """Apply a comparison; ``False`` if its value is not orderable here."""
        key = order_key(node.value)
        if key is None or key == (_NULL,):
            return False
        bracket = (key[0],)
        if isinstance(node, (GreaterThanCondition, GreaterThanOrEqualCondition)):
            if self.low is None or key > self.low:
                self.low, self.low_open = key, isinstance(node, GreaterThanCondition)
            if self.high is None:
                self.high = (key[0], _AFTER_ALL)
        else:
            if self.high is None or key < self.high:
                self.high, self.high_open = key, isinstance(node, LessThanCondition)
            if self.low is None:
                self.low = bracket
        return True

    def admits(self, key: OrderKey) -> bool:
        if self.low is not None and (key < self.low or (self.low_open and key == self.low)):
            return False
        return not (
            self.high is not None and (key > self.high or (self.high_open and key == self.high))
        )


def _clauses(plan: Any) -> list[Any]:
    if isinstance(plan, AndCondition):
        return [c for clause in plan.clauses for c in _clauses(clause)]
    return [plan]


class Route:
    """How to serve one query from one ordered index."""

    def __init__(
        self,
        prefix: tuple[str, ...],
        sort: tuple[str, ...],
        groups: list[tuple[OrderKey, ...]],
        bounds: Bounds,
        descending: bool,
    ) -> None:
        self.prefix, self.sort = prefix, sort
        self.groups, self.bounds, self.descending = groups, bounds, descending


def choose(
    plan: Any, sort: list[tuple[str, int]], index_keys: list[list[tuple[str, Any]]]
) -> Route | None:
    """A route through one of ``index_keys`` (each an index's key pattern) that serves
    ``plan`` sorted by ``sort``, or ``None``."""
    directions = {direction for _, direction in sort}
    if not sort or len(directions) != 1 or directions - {1, -1}:
        return None
    sort_fields = tuple(field for field, _ in sort)
    clauses = _clauses(plan)
    pinned = _pinned(clauses)
    for key_pattern in index_keys:
        fields = tuple(field for field, _ in key_pattern)
        if any(direction != 1 for _, direction in key_pattern):
            continue
        for split in range(len(fields), -1, -1):
            prefix, rest = fields[:split], fields[split:]
            if rest[: len(sort_fields)] != sort_fields or not all(f in pinned for f in prefix):
                continue
            bounds = Bounds()
            for clause in clauses:
                if (
                    isinstance(clause, COMPARISONS)
                    and clause.field == sort_fields[0]
                    and not bounds.narrow(clause)
                ):
                    return None
            groups = [tuple(keys) for keys in itertools.product(*(pinned[f] for f in prefix))]
            return Route(prefix, rest, groups, bounds, descending=-1 in directions)
    return None


# An equality lookup through more index groups than this is left to a scan.
MAX_LOOKUP_GROUPS = 10_000


def choose_lookup(plan: Any, index_keys: list[list[tuple[str, Any]]]) -> Route | None:
    """A route that finds ``plan``'s candidates by equality on every field of one of
    ``index_keys`` (the planner's ``$merge`` targets: ``task`` and ``sourceDocId`` by
    ``$in``), or ``None``."""
    pinned = _pinned(_clauses(plan))
    for key_pattern in index_keys:
        fields = tuple(field for field, _ in key_pattern)
        if not fields or not all(field in pinned for field in fields):
            continue
        if math.prod(len(pinned[field]) for field in fields) > MAX_LOOKUP_GROUPS:
            continue
        groups = [tuple(keys) for keys in itertools.product(*(pinned[f] for f in fields))]
        return Route(fields, (), groups, Bounds(), descending=False)
    return None


def _pinned(clauses: list[Any]) -> dict[str, list[OrderKey]]:
    """The fields ``clauses`` pin to a list of exact values (by ``$eq`` or ``$in``)."""
    pinned: dict[str, list[OrderKey]] = {}
    for clause in clauses:
        if isinstance(clause, (EqualsCondition, InCondition)) and not clause.null_matches_undefined:
            values = (clause.value,) if isinstance(clause, EqualsCondition) else clause.values
            keys = [order_key(v) if not isinstance(v, (list, dict)) else None for v in values]
            if all(k is not None and k != (_NULL,) for k in keys) and clause.field not in pinned:
                pinned[clause.field] = list(dict.fromkeys(keys))  # type: ignore[arg-type]
    return pinned
