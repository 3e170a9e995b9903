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

Sorted reads with a limit (the claim, keyset pages) walk an ordered index instead of
matching and sorting every document: see ``ordered.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import bson
from bson import Binary, ObjectId
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.identity import id_contains_numeric_value
from mongoeco.core.query_plan import (
    AndCondition,
    EqualsCondition,
    ExprCondition,
    InCondition,
    NotCondition,
    OrCondition,
    WhereCondition,
)
from mongoeco.core.sorting import sort_documents
from mongoeco.engines._memory_collection import MemoryCollection
from mongoeco.engines.semantic_core import compile_update_semantics
from mongoeco.engines.virtual_indexes import document_in_virtual_index
from mongoeco.errors import DuplicateKeyError, OperationFailure

from . import ordered
from .follow import Follower, NumericIds, plain_number
from .isolation import DocumentConflicts
from .pacing import Pacer

# _id types whose BSON equality is plain Python equality of one type: for them the
# storage key of a query value is the storage key of every document it matches. Numbers
# (1 == 1.0 == Int64(1) under different keys) and documents are left to mongoeco.
_EXACT_ID_TYPES = (ObjectId, str, uuid.UUID, datetime.datetime, Binary, bytes)


def _exact_id(value: Any) -> bool:
    return isinstance(value, _EXACT_ID_TYPES) and not isinstance(value, bool)


def _id_lookup_values(plan: Any) -> tuple[Any, ...] | None:
    """The ``_id`` values ``plan`` is restricted to, or ``None`` if it is not (or if
    one of them is neither an exact key nor a plain number)."""
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
    return found if all(_exact_id(v) or plain_number(v) for v in found) else None


MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
DOLLAR_PREFIXED_FIELD_NAME: Final = 52


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


def _check_id(value: Any) -> None:
    """Refuse an ``_id`` holding a ``$``-prefixed field name, as MongoDB 5.0+ does
    (elsewhere in a document such names are allowed)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if str(name).startswith("$"):
                raise OperationFailure(
                    f"_id fields may not contain '$'-prefixed fields: {name} is not valid "
                    "for storage.",
                    code=DOLLAR_PREFIXED_FIELD_NAME,
                )
            _check_id(inner)
    elif isinstance(value, list):
        for inner in value:
            _check_id(inner)


class SortedRead:
    """A sorted read with a limit, handed from the public engine method to the
    candidate selection (which mongoeco calls without the sort or the limit)."""

    def __init__(
        self,
        namespace: tuple[str, str],
        plan: Any,
        sort: list[tuple[str, int]],
        wanted: int,
        matches: Callable[[dict[str, Any]], bool],
        route: ordered.Route | None,
    ) -> None:
        self.namespace, self.plan, self.sort = namespace, plan, sort
        self.wanted, self.matches = wanted, matches
        # The ordered index that serves it, chosen once when the read starts.
        self.route = route
        # Whether mongoeco was told not to sort: the candidates must come in order.
        self.presorted = False


logger = logging.getLogger(__name__)
T = TypeVar("T")

# Set while an insert runs as mongoeco's overwriting insert (see _insert_documents_impl).
_PLAIN_INSERT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mongoreact_plain_insert", default=False
)
_NO_ID = object()

# An unsorted read of a whole large collection runs as scans of this many documents.
SCAN_CHUNK: Final = 2000
_SCAN_CHUNK: contextvars.ContextVar[list[tuple[Any, Any]] | None] = contextvars.ContextVar(
    "mongoreact_scan_chunk", default=None
)

# Task-local, so interleaved commands on the server's event loop never see each other's.
_SORTED_READ: contextvars.ContextVar[SortedRead | None] = contextvars.ContextVar(
    "mongoreact_sorted_read", default=None
)


def _uses_expressions(node: Any) -> bool:
    """Whether a query plan evaluates expressions (whose ``$$NOW`` is per compilation)."""
    if isinstance(node, (ExprCondition, WhereCondition)):
        return True
    if isinstance(node, (AndCondition, OrCondition)):
        return any(_uses_expressions(clause) for clause in node.clauses)
    return isinstance(node, NotCondition)  # conservative: a negation may wrap anything


def _index_of(
    namespace: tuple[str, str], route: ordered.Route
) -> tuple[tuple[str, str, Any], Callable[[], Follower]]:
    """The name of the ordered index ``route`` walks, and how to create it."""
    return (*namespace, (route.prefix, route.sort)), lambda: ordered.OrderedIndex(
        route.prefix, route.sort
    )


async def _first_step_with(
    inner: AsyncIterator[Any], variable: contextvars.ContextVar[T], value: T
) -> AsyncGenerator[Any, None]:
    """``inner`` (a mongoeco scan) with ``variable`` set to ``value`` during its first
    step, where mongoeco selects the scan's candidates."""
    token = variable.set(value)
    try:
        first = await anext(inner)
    except StopAsyncIteration:
        return
    finally:
        variable.reset(token)
    yield first
    async for document in inner:
        yield document


async def _serving(
    inner: AsyncIterator[Any], request: SortedRead | None, prepare: Callable[[], Awaitable[None]]
) -> AsyncIterator[Any]:
    await prepare()
    async for document in _first_step_with(inner, _SORTED_READ, request):
        yield document


class FastMemoryEngine(DocumentConflicts):
    """MemoryEngine whose unique checks and ``_id`` reads are lookups, not scans, and
    whose sorted reads with a limit walk an ordered index."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pacer = Pacer()  # the wire layer tells it when each command starts
        # Per namespace: what follows its writes (ordered indexes, numeric ids), by kind.
        self._followers: dict[tuple[str, str, Any], Follower] = {}
        self._builds: dict[tuple[str, str, Any], asyncio.Task[None]] = {}  # until they end

    def scan_find_semantics(
        self, db_name: str, coll_name: str, semantics: Any, *, context: Any = None
    ) -> Any:
        if semantics.text_query is not None or semantics.collation is not None:
            return self.pacer.paced(
                super().scan_find_semantics(db_name, coll_name, semantics, context=context)
            )
        if (
            not semantics.sort
            and not semantics.skip
            and self._whole_scan(db_name, coll_name, semantics.query_plan, context)
        ):
            return self.pacer.paced(self._chunked_scan(db_name, coll_name, semantics, context))
        if not semantics.sort or not semantics.limit:
            inner = super().scan_find_semantics(db_name, coll_name, semantics, context=context)
            plan = semantics.query_plan
            return _serving(
                self.pacer.paced(inner),
                None,
                lambda: self._prepare_lookup((db_name, coll_name), plan),
            )
        plan, variables, dialect = semantics.query_plan, semantics.variables, semantics.dialect

        def matches(document: dict[str, Any]) -> bool:
            return QueryEngine.match_plan(document, plan, dialect=dialect, variables=variables)  # type: ignore[no-any-return]

        wanted = semantics.skip + semantics.limit
        request = self._sorted_read((db_name, coll_name), plan, semantics.sort, wanted, matches)
        # When an index serves the sort, the candidates arrive in order and mongoeco's
        # sort (a comparison function per pair, 40% of a reconciliation's server time)
        # is skipped; the candidates are then sorted here if the index cannot serve
        # after all (see _candidate_items_for_plan_locked).
        if self._storage_view(context) is self._storage and request.route is not None:
            request.presorted = True
            semantics = dataclasses.replace(semantics, sort=None)
        inner = super().scan_find_semantics(db_name, coll_name, semantics, context=context)
        return _serving(self.pacer.paced(inner), request, lambda: self._prepare_sorted(request))

    def _whole_scan(self, db_name: str, coll_name: str, plan: Any, context: Any) -> bool:
        """Whether a read reads every document of a large live collection (no ``_id``
        lookup, no index that pins it)."""
        coll = self._storage.get(db_name, {}).get(coll_name)
        return (
            isinstance(coll, MemoryCollection)
            and len(coll) > SCAN_CHUNK
            and self._storage_view(context) is self._storage
            and _id_lookup_values(plan) is None
            and ordered.choose_lookup(plan, self._key_patterns(db_name, coll_name)[1:]) is None
        )

    async def _chunked_scan(
        self, db_name: str, coll_name: str, semantics: Any, context: Any
    ) -> AsyncIterator[Any]:
        """An unsorted read of a whole collection as mongoeco scans of ``SCAN_CHUNK``
        documents each, over one snapshot: mongoeco filters a scan's candidates without
        suspending, so at 100 000 documents one scan held other connections for 0.8 s;
        between chunks the loop runs others. The snapshot (an O(1) copy of the
        persistent map) makes the chunks one consistent read."""
        snapshot = self._storage[db_name][coll_name].copy()
        keys = list(snapshot.keys())
        limit = semantics.limit or None
        sent = 0
        for start in range(0, len(keys), SCAN_CHUNK):
            chunk = [(key, snapshot[key]) for key in keys[start : start + SCAN_CHUNK]]
            inner = super().scan_find_semantics(db_name, coll_name, semantics, context=context)
            reading = _first_step_with(inner, _SCAN_CHUNK, chunk)
            async with contextlib.aclosing(reading) as documents:
                async for document in documents:
                    yield document
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
            await self.pacer.breathe()

    async def update_with_operation(
        self, db_name: str, coll_name: str, operation: Any, *args: Any, **kwargs: Any
    ) -> Any:
        await self.pacer.breathe()  # update_many calls this once per document
        # A sorted update changes one document (findAndModify, updateOne with sort).
        if not operation.sort:
            return await super().update_with_operation(
                db_name, coll_name, operation, *args, **kwargs
            )
        bound = kwargs.get("operation_context")
        semantics = compile_update_semantics(
            operation if bound is None else operation.bind(bound),
            dialect=kwargs.get("dialect"),
            selector_filter=kwargs.get("selector_filter"),
        )
        plans = [p for p in (semantics.query_plan, semantics.selector_plan) if p is not None]
        if semantics.collation is not None or any(_uses_expressions(p) for p in plans):
            return await super().update_with_operation(
                db_name, coll_name, operation, *args, **kwargs
            )

        def matches(document: dict[str, Any]) -> bool:
            return all(
                QueryEngine.match_plan(document, p, dialect=semantics.dialect) for p in plans
            )

        request = self._sorted_read(
            (db_name, coll_name), semantics.query_plan, semantics.sort, 1, matches
        )
        await self._prepare_sorted(request)
        token = _SORTED_READ.set(request)
        try:
            return await super().update_with_operation(
                db_name, coll_name, operation, *args, **kwargs
            )
        finally:
            _SORTED_READ.reset(token)

    async def delete_with_operation(self, *args: Any, **kwargs: Any) -> Any:
        await self.pacer.breathe()  # delete_many calls this once per document
        return await super().delete_with_operation(*args, **kwargs)

    def _set_storage_document_locked(
        self, collection: Any, storage_key: Any, document: Any
    ) -> None:
        before = getattr(collection, "_values", None)
        super()._set_storage_document_locked(collection, storage_key, document)
        self._follow_write(collection, before, storage_key, document)

    def _delete_storage_document_locked(self, collection: Any, storage_key: Any) -> None:
        before = getattr(collection, "_values", None)
        super()._delete_storage_document_locked(collection, storage_key)
        self._follow_write(collection, before, storage_key, None)

    def _follow_write(self, collection: Any, before: Any, storage_key: Any, data: Any) -> None:
        following = [f for f in self._followers.values() if f.follows(collection, before)]
        if not following:
            return
        document = None if data is None else self._borrow_storage_document(data)
        for follower in following:
            follower.written(collection, before, storage_key, document)

    def _usable(
        self, name: tuple[str, str, Any], create: Callable[[], Follower], coll: Any
    ) -> Follower | None:
        """The follower ``name`` if it describes ``coll`` as it is now; otherwise
        ``None``, and a build of it is under way (see follow.py)."""
        follower = self._followers.get(name)
        if follower is None:
            follower = self._followers[name] = create()
        if follower.usable(coll):
            return follower
        if follower.collection is coll and follower.root is coll._values:
            return None  # this very state was found unservable: no rebuild per read
        if not follower.building:
            build = follower.build(coll, self._borrow_storage_document, self.pacer.breathe)
            follower.building = True  # from now: no second build until this one ends
            task = asyncio.get_running_loop().create_task(build)
            self._builds[name] = task
            task.add_done_callback(lambda done: self._build_ended(name, done))
        return None

    def _build_ended(self, name: tuple[str, str, Any], task: asyncio.Task[None]) -> None:
        if self._builds.get(name) is task:
            del self._builds[name]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            logger.error("building an index of the embedded server failed", exc_info=error)

    async def _await_follower(
        self, name: tuple[str, str, Any], create: Callable[[], Follower]
    ) -> None:
        """Wait until the follower ``name`` describes its live collection (building it
        if need be): a command that would use it waits for the paced build rather than
        fall back to a scan, which would hold every other connection."""
        for _ in range(3):  # a build overtaken by a write it could not follow is redone
            coll = self._storage.get(name[0], {}).get(name[1])
            if not isinstance(coll, MemoryCollection) or self._usable(name, create, coll):
                return
            task = self._builds.get(name)
            if task is None:
                return
            await asyncio.shield(task)  # a cancelled command leaves the build running

    async def _prepare_sorted(self, request: SortedRead) -> None:
        if request.route is not None:
            await self._await_follower(*_index_of(request.namespace, request.route))

    async def _prepare_lookup(self, namespace: tuple[str, str], plan: Any) -> None:
        route = ordered.choose_lookup(plan, self._key_patterns(*namespace)[1:])
        if route is not None:
            await self._await_follower(*_index_of(namespace, route))

    def _sorted_read(
        self,
        namespace: tuple[str, str],
        plan: Any,
        sort: list[tuple[str, int]],
        wanted: int,
        matches: Callable[[dict[str, Any]], bool],
    ) -> SortedRead:
        route = ordered.choose(plan, sort, self._key_patterns(*namespace))
        return SortedRead(namespace, plan, sort, wanted, matches, route)

    def _key_patterns(self, db_name: str, coll_name: str) -> list[list[tuple[str, Any]]]:
        """``_id``'s and every declared index's key pattern."""
        indexes = self._indexes.get(db_name, {}).get(coll_name, [])
        return [[("_id", 1)], *(list(index["key"]) for index in indexes)]

    def _live_namespace(self, coll: Any) -> tuple[str, str] | None:
        """The namespace whose live collection ``coll`` is (``None`` for a transaction's
        view or a collection being created)."""
        for db_name, collections in self._storage.items():
            for coll_name, candidate in collections.items():
                if candidate is coll:
                    return db_name, coll_name
        return None

    def _ordered_index(
        self, namespace: tuple[str, str], route: ordered.Route, coll: Any
    ) -> ordered.OrderedIndex | None:
        """The ordered index ``route`` walks, in sync with ``coll``; ``None`` if it
        cannot serve."""
        index = self._usable(*_index_of(namespace, route), coll)
        return index if isinstance(index, ordered.OrderedIndex) else None

    def _looked_up(self, coll: Any, query_plan: Any, limit: int | None) -> list[Any] | None:
        """Storage keys of ``query_plan``'s candidates found by equality on every field
        of an index (a superset: mongoeco matches each), in natural order; ``None`` if
        no index serves."""
        if not isinstance(coll, MemoryCollection):
            return None
        namespace = self._live_namespace(coll)
        if namespace is None:
            return None
        route = ordered.choose_lookup(query_plan, self._key_patterns(*namespace)[1:])
        index = None if route is None else self._ordered_index(namespace, route, coll)
        if route is None or index is None:
            return None
        found: list[Any] = coll.ordered_keys(index.members(route.groups), limit=limit)
        return found

    def _sort_here(
        self, items: list[tuple[Any, Any]], request: SortedRead, dialect: Any
    ) -> list[tuple[Any, Any]]:
        """The first ``request.wanted`` of ``items`` matching, in sort order: what
        mongoeco would have done for a read it was told not to sort."""
        matching = {}
        for storage_key, data in items:
            document = self._borrow_storage_document(data)
            if request.matches(document):
                matching[id(document)] = (storage_key, data, document)
        documents = [document for _, _, document in matching.values()]
        in_order = sort_documents(documents, request.sort, dialect=dialect)
        return [matching[id(document)][:2] for document in in_order[: request.wanted]]

    def _sorted_candidates(self, coll: Any, request: SortedRead) -> list[tuple[Any, Any]] | None:
        """The first ``request.wanted`` matching documents in sort order, read from an
        ordered index; ``None`` if no index serves the request."""
        db_name, coll_name = request.namespace
        if not isinstance(coll, MemoryCollection) or coll is not self._storage.get(db_name, {}).get(
            coll_name
        ):
            return None  # a transaction's view: left to mongoeco
        route = request.route
        index = None if route is None else self._ordered_index(request.namespace, route, coll)
        if route is None or index is None:
            return None
        found: list[tuple[Any, Any]] = []
        for storage_key in index.walk(route.groups, route.bounds, descending=route.descending):
            data = coll[storage_key]
            if request.matches(self._borrow_storage_document(data)):
                found.append((storage_key, data))
                if len(found) >= request.wanted:
                    break
        return found

    def _candidate_items_for_plan_locked(
        self, coll: Any, query_plan: Any, **options: Any
    ) -> list[tuple[Any, Any]]:
        # mongoeco 4.11.0: every read (find, aggregate's leading $match, update, delete)
        # takes its candidates from here, and then matches each against the full plan,
        # so a superset is safe; ours is exact.
        chunk = _SCAN_CHUNK.get()
        if chunk is not None:
            _SCAN_CHUNK.set(None)  # this read only
            return chunk
        request = _SORTED_READ.get()
        if (
            request is not None
            and options.get("collation") is None
            and (request.plan is query_plan or request.plan == query_plan)
        ):
            _SORTED_READ.set(None)  # this read only: not a nested one with the same plan
            served = self._sorted_candidates(coll, request)
            if served is not None:
                return served
            if request.presorted:
                items = super()._candidate_items_for_plan_locked(coll, query_plan, **options)
                return self._sort_here(items, request, options.get("dialect"))
        if options.get("collation") is not None:
            return super()._candidate_items_for_plan_locked(coll, query_plan, **options)  # type: ignore[no-any-return]
        limit = options.get("natural_order_limit")
        values = _id_lookup_values(query_plan)
        keys = None if values is None else self._id_keys(coll, values)
        if keys is not None:
            if isinstance(coll, MemoryCollection):
                found = coll.ordered_keys(keys, limit=limit)
            else:
                found = [key for key in coll if key in keys]
        else:
            found = self._looked_up(coll, query_plan, limit)
            if found is None:
                return super()._candidate_items_for_plan_locked(coll, query_plan, **options)  # type: ignore[no-any-return]
        return [(key, coll[key]) for key in found]

    async def _insert_documents_impl(
        self,
        db_name: str,
        coll_name: str,
        documents: list[dict[str, Any]],
        overwrite: bool = False,
        **options: Any,
    ) -> Any:
        # mongoeco 4.11.0 reads every stored document once per insert command when an
        # inserted _id is numeric (1, 1.0 and Int64(1) are one key to MongoDB, three to
        # its storage). Its overwriting insert skips that scan; we run that instead,
        # with our own exact duplicate check inside the write (``_check_new_id``). Any
        # duplicate key rolls that attempt back and the insert runs as mongoeco's own,
        # which reports it with MongoDB's ordered-insert semantics.
        await self.pacer.breathe()
        if not overwrite and any(plain_number(document.get("_id")) for document in documents):
            await self._await_follower((db_name, coll_name, "numeric _id"), NumericIds)
        if overwrite or not self._plain_insert(db_name, coll_name, documents, options):
            return await super()._insert_documents_impl(
                db_name, coll_name, documents, overwrite, **options
            )
        token = _PLAIN_INSERT.set(True)
        try:
            return await super()._insert_documents_impl(
                db_name, coll_name, documents, True, **options
            )
        except DuplicateKeyError:
            pass
        finally:
            _PLAIN_INSERT.reset(token)
        return await super()._insert_documents_impl(
            db_name, coll_name, documents, overwrite, **options
        )

    def _plain_insert(
        self, db_name: str, coll_name: str, documents: list[dict[str, Any]], options: Any
    ) -> bool:
        """Whether an insert with numeric ``_id``s can skip mongoeco's scan: outside a
        transaction, every ``_id`` a plain number or an exact key, all distinct, none
        stored yet (checked again inside the write)."""
        ids = [document.get("_id", _NO_ID) for document in documents]
        numeric = [value for value in ids if plain_number(value)]
        if not numeric or any(
            value is _NO_ID or (not plain_number(value) and not _exact_id(value)) for value in ids
        ):
            return False
        if self._storage_view(options.get("context")) is not self._storage:
            return False
        keys = {self._storage_key(value) for value in ids}
        if len(keys) != len(ids) or len(set(numeric)) != len(numeric):
            return False
        coll = self._storage.get(db_name, {}).get(coll_name)
        if coll is None:
            return True
        if not isinstance(coll, MemoryCollection) or any(key in coll for key in keys):
            return False
        known = self._numeric_ids(db_name, coll_name, coll)
        return known is not None and not any(value in known for value in numeric)

    async def get_document(self, db_name: str, coll_name: str, doc_id: Any, **options: Any) -> Any:
        # mongoeco 4.11.0 reads a document by its storage key and, when a number is
        # not stored under the key of its own type (asked 1, stored 1.0 or Int64(1)),
        # compares every stored document: a read by a numeric _id grew with the
        # collection. The numeric ids' map gives the stored _id, whose key is exact.
        context = options.get("context")
        operation = options.get("operation_context")
        if operation is not None:
            context = operation.session
        coll = self._storage_view(context).get(db_name, {}).get(coll_name)
        if (
            plain_number(doc_id)
            and isinstance(coll, MemoryCollection)
            and coll is self._storage.get(db_name, {}).get(coll_name)
            and self._storage_key(doc_id) not in coll
        ):
            known = self._numeric_ids(db_name, coll_name, coll)
            if known is not None:
                stored = known.stored_id(doc_id)
                if stored is None:
                    return None
                doc_id = stored
        return await super().get_document(db_name, coll_name, doc_id, **options)

    def _id_keys(self, coll: Any, values: tuple[Any, ...]) -> set[Any] | None:
        """Storage keys of the documents whose ``_id`` is one of ``values``; ``None`` if
        a numeric value cannot be looked up (the collection's numeric ids are being
        described, or are not all plain numbers): then mongoeco scans."""
        keys = {self._storage_key(value) for value in values if _exact_id(value)}
        numbers = [value for value in values if not _exact_id(value)]
        if not numbers:
            return keys
        namespace = self._live_namespace(coll) if isinstance(coll, MemoryCollection) else None
        known = None if namespace is None else self._numeric_ids(*namespace, coll)
        if known is None:
            return None
        for number in numbers:
            keys |= known.keys_for(number)
        return keys

    def _numeric_ids(self, db_name: str, coll_name: str, coll: Any) -> NumericIds | None:
        follower = self._usable((db_name, coll_name, "numeric _id"), NumericIds, coll)
        return follower if isinstance(follower, NumericIds) else None

    def _check_new_id(self, db_name: str, coll_name: str, candidate: dict[str, Any]) -> None:
        """Inside a write: refuse an ``_id`` already stored (by BSON equality)."""
        coll = self._storage.get(db_name, {}).get(coll_name, {})
        doc_id = candidate.get("_id")
        known = self._numeric_ids(db_name, coll_name, coll)
        if (
            self._storage_key(doc_id) in coll
            or known is None
            or (plain_number(doc_id) and doc_id in known)
        ):
            raise self._unique_key_error(
                f"Duplicate key: _id={doc_id}", f"{db_name}.{coll_name}", candidate
            )

    def _ensure_unique_indexes(
        self, db_name: str, coll_name: str, candidate: dict[str, Any], **options: Any
    ) -> None:
        # mongoeco 4.11.0 checks every document it writes here (inserts, updates and
        # replacements alike) and nowhere enforces MongoDB's 16 MiB document limit.
        if _PLAIN_INSERT.get():
            self._check_new_id(db_name, coll_name, candidate)
            options.update(exclude_storage_key=None, check_id_storage=False, scan_payload_id=False)
        _check_size(candidate, updating=options.get("exclude_storage_key") is not None)
        _check_id(candidate.get("_id"))
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
