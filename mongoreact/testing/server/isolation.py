"""Transactions isolated as MongoDB isolates them: a snapshot per transaction and write
conflicts per document, first writer wins.

mongoeco 4.11.0 gives each transaction a copy of every collection (persistent maps, so
the copy is cheap) and at commit swaps the copies of the collections it touched for the
live ones. That is only exact when nothing else was written meanwhile, so mongoeco
refuses any commit after any other write anywhere on the server: on a server where
mongoreact heartbeats every second, most transactions failed once and were retried,
and two transactions writing the same document were both accepted until the commit.

:class:`DocumentConflicts` tracks which documents each open transaction wrote and does
what MongoDB does:

- a transaction's first write to a document fails with ``WriteConflict`` (112,
  ``TransientTransactionError``) when another open transaction has written it, or when
  anyone changed it after this transaction's snapshot was taken;
- a write outside any transaction is never refused (MongoDB makes it wait for the
  transaction to end; here it goes first), and the transaction that wrote the same
  document fails at commit instead;
- a commit after other writes applies the transaction's documents to the live
  collections one by one (index entries included) instead of swapping whole
  collections, after checking that none of them changed since the snapshot; a unique
  index value taken meanwhile is a ``WriteConflict`` too. Nothing is written unless
  everything is: a failure rolls back every collection it touched;
- a transaction holding a document another one wants is aborted once it is older than
  MongoDB's ``transactionLifetimeLimitSeconds`` (60 s; ``setParameter`` changes it), so
  a client that died inside a transaction does not block that document for ever; its
  session then gets ``NoSuchTransaction`` (251).

A commit with no other write since its snapshot is still mongoeco's own swap.

Private parts of mongoeco 4.11.0 this relies on (an upgrade must re-check them, and
``tests/conformance/test_transaction_isolation.py`` is the test that would notice):
``MemoryEngine._start_session_transaction`` / ``_commit_session_transaction`` /
``_abort_session_transaction`` / ``_active_mvcc_state`` (the transaction hooks),
``_mvcc_states`` and ``MemoryMvccState`` (a transaction's copies and pending changes),
``_publication_stack`` (which storage a write goes to), ``_document_state_rollback_locked``
and ``_update_indexes_locked`` (a document write with its index entries, undone on
failure), ``_prepare_transaction_write_set_locked`` and ``_prepare_committed_changes_locked``
(mongoeco's own commit steps), and ``_meta_lock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any, Final

from mongoeco.engines._memory_collection import MemoryCollection
from mongoeco.engines.memory import MemoryEngine
from mongoeco.errors import DuplicateKeyError, OperationFailure

from .errors import NO_SUCH_TRANSACTION, TRANSIENT_TRANSACTION, WRITE_CONFLICT

# MongoDB's default transactionLifetimeLimitSeconds.
TRANSACTION_LIFETIME_SECONDS: Final = 60

logger = logging.getLogger(__name__)

Namespace = tuple[str, str]
_MISSING: Final = object()


def write_conflict() -> OperationFailure:
    """MongoDB's answer to a write that conflicts with another one."""
    return OperationFailure(
        "WriteConflict error: this operation conflicted with another operation. "
        "Please retry your operation or multi-document transaction.",
        code=WRITE_CONFLICT,
        error_labels=TRANSIENT_TRANSACTION,
    )


def no_such_transaction() -> OperationFailure:
    return OperationFailure(
        "Transaction has been aborted.",
        code=NO_SUCH_TRANSACTION,
        error_labels=TRANSIENT_TRANSACTION,
    )


@dataclasses.dataclass(eq=False)
class _Writes:
    """What one open transaction has written."""

    state: Any  # mongoeco's MemoryMvccState: the transaction's copies
    session_id: Any
    started: float  # time.monotonic()
    existed: frozenset[Namespace]  # the namespaces that existed at its snapshot
    # Per namespace: its contents at the snapshot and the storage keys the transaction
    # wrote.
    before: dict[Namespace, Any] = dataclasses.field(default_factory=dict)
    keys: dict[Namespace, set[Any]] = dataclasses.field(default_factory=dict)
    untracked: bool = False  # it wrote where no namespace could be told

    def expired(self, limit_seconds: float) -> bool:
        return time.monotonic() - self.started > limit_seconds


def _namespaces(collections: dict[str, Iterable[str]], storage: dict[str, Any]) -> set[Namespace]:
    found = {(db, coll) for db, names in collections.items() for coll in names}
    found.update((db, coll) for db, colls in storage.items() for coll in colls)
    return found


class DocumentConflicts(MemoryEngine):  # type: ignore[misc]
    """mongoeco's in-memory engine with MongoDB's per-document transaction conflicts."""

    # mongoeco's roots (untyped to mypy, which does not follow mongoeco).
    _storage: Any
    _indexes: Any
    _index_data: Any
    _search_indexes: Any
    _collections: Any
    _collection_options: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open_writes: dict[int, _Writes] = {}  # id(MemoryMvccState) -> its writes
        self._owners: dict[tuple[Namespace, Any], _Writes] = {}  # document -> its writer
        self._expired_sessions: set[Any] = set()
        # MongoDB's server parameter of that name (``setParameter`` changes it).
        self.transaction_lifetime_limit_seconds = TRANSACTION_LIFETIME_SECONDS

    # -- the transaction hooks ----------------------------------------------------------
    def _start_session_transaction(self, session: Any) -> None:
        self._expired_sessions.discard(session.session_id)
        super()._start_session_transaction(session)
        with self._meta_lock:
            state = self._mvcc_states[session.session_id]
            self._open_writes[id(state)] = _Writes(
                state=state,
                session_id=session.session_id,
                started=time.monotonic(),
                existed=frozenset(_namespaces(state.collections, state.storage)),
                # The snapshot's contents (persistent maps: copies are cheap), which the
                # transaction's own copies stop being once it writes.
                before={
                    (db, name): coll.copy()
                    for db, colls in state.storage.items()
                    for name, coll in colls.items()
                },
            )

    def _abort_session_transaction(self, session: Any) -> None:
        with self._meta_lock:
            self._release(self._mvcc_states.get(session.session_id))
        super()._abort_session_transaction(session)

    def _active_mvcc_state(self, context: Any) -> Any:
        if (
            context is not None
            and context.in_transaction
            and context.session_id in self._expired_sessions
        ):
            raise no_such_transaction()
        return super()._active_mvcc_state(context)

    def _commit_session_transaction(self, session: Any) -> None:
        with self._meta_lock:
            if session.session_id in self._expired_sessions:
                raise no_such_transaction()
            state = self._mvcc_states.get(session.session_id)
            writes = None if state is None else self._open_writes.get(id(state))
            try:
                if (
                    writes is None
                    or not state.has_writes
                    or state.snapshot_version == self._mvcc_version
                ):
                    super()._commit_session_transaction(session)  # nothing else was written
                else:
                    self._merge_locked(writes)
                    self._sync_session_state(
                        session, transaction_active=False, snapshot_version=self._mvcc_version
                    )
            finally:
                self._release(state)

    # -- every document write -----------------------------------------------------------
    def _set_storage_document_locked(
        self, collection: Any, storage_key: Any, document: Any
    ) -> None:
        self._claim(collection, storage_key)
        super()._set_storage_document_locked(collection, storage_key, document)

    def _delete_storage_document_locked(self, collection: Any, storage_key: Any) -> None:
        self._claim(collection, storage_key)
        super()._delete_storage_document_locked(collection, storage_key)

    def _claim(self, collection: Any, storage_key: Any) -> None:
        """Before a transaction writes a document: refuse it if another open transaction
        wrote it, or if it changed since this transaction's snapshot."""
        if not self._publication_stack:
            return
        publication = self._publication_stack[-1]
        writes = None if publication.state is None else self._open_writes.get(id(publication.state))
        if writes is None:
            return  # a write outside any transaction, or replayed by a commit
        namespace = next(
            (
                (db, coll)
                for db, coll in publication.touched_namespaces
                if writes.state.storage.get(db, {}).get(coll) is collection
            ),
            None,
        )
        if namespace is None:
            writes.untracked = True  # a write this class cannot place: no merge
            return
        if namespace not in writes.existed:
            return  # a collection this transaction creates: checked at commit
        before = writes.before.setdefault(namespace, MemoryCollection())  # existed empty
        if storage_key in writes.keys.get(namespace, ()):
            return
        self._claim_key(writes, namespace, storage_key)
        moved = collection.get(storage_key, _MISSING)
        if moved is not _MISSING and moved is not before.get(storage_key, _MISSING):
            # mongoeco moves a document whose _id changes numeric type (0.0 -> 0) to its
            # new key without a write hook (MemoryCollection.replace_key): the old key,
            # that of the _id it still holds, is written too.
            old_id = self._borrow_storage_document(moved).get("_id")
            self._claim_key(writes, namespace, self._storage_key(old_id))

    def _claim_key(self, writes: _Writes, namespace: Namespace, storage_key: Any) -> None:
        if storage_key in writes.keys.get(namespace, ()):
            return
        owner = self._owners.get((namespace, storage_key))
        if owner is not None and owner is not writes:
            if not owner.expired(self.transaction_lifetime_limit_seconds):
                raise write_conflict()
            self._expire(owner)
        live = self._storage.get(namespace[0], {}).get(namespace[1])
        now = _MISSING if live is None else live.get(storage_key, _MISSING)
        if now is not writes.before[namespace].get(storage_key, _MISSING):
            raise write_conflict()
        self._owners[(namespace, storage_key)] = writes
        writes.keys.setdefault(namespace, set()).add(storage_key)

    # -- ending transactions -------------------------------------------------------------
    def _release(self, state: Any) -> None:
        writes = None if state is None else self._open_writes.pop(id(state), None)
        if writes is None:
            return
        for namespace, keys in writes.keys.items():
            for key in keys:
                if self._owners.get((namespace, key)) is writes:
                    del self._owners[(namespace, key)]

    def _expire(self, writes: _Writes) -> None:
        """Abort a transaction past its lifetime (its session learns at its next step)."""
        self._release(writes.state)
        if self._mvcc_states.get(writes.session_id) is writes.state:
            del self._mvcc_states[writes.session_id]
        self._expired_sessions.add(writes.session_id)

    def _merge_locked(self, writes: _Writes) -> None:
        """Commit ``writes`` on top of what others committed since its snapshot."""
        self._ensure_publication_boundary()
        state = writes.state
        if state.touched_databases or writes.untracked:
            raise write_conflict()  # only a commit with nothing else written can apply it
        live_namespaces = _namespaces(self._collections, self._storage)
        ours = _namespaces(state.collections, state.storage)
        created: set[Namespace] = set()
        merged: list[Namespace] = []
        for namespace in sorted(state.touched_namespaces):
            if namespace not in writes.existed:
                if namespace in live_namespaces:
                    raise write_conflict()  # someone else created it meanwhile
                created.add(namespace)
            elif namespace not in live_namespaces or namespace not in ours:
                raise write_conflict()  # dropped meanwhile
            elif self._definition(
                namespace, state.indexes, state.collection_options
            ) != self._definition(namespace, self._indexes, self._collection_options):
                raise write_conflict()  # its indexes or options changed meanwhile
            else:
                self._check_unchanged(namespace, writes)
                merged.append(namespace)
        with contextlib.ExitStack() as undo:
            for db, coll in merged:
                undo.enter_context(
                    self._document_state_rollback_locked(
                        db,
                        coll,
                        storage=self._storage,
                        indexes=self._indexes,
                        index_data=self._index_data,
                        search_indexes=self._search_indexes,
                        collections=self._collections,
                        options=self._collection_options,
                    )
                )
            try:
                for namespace in merged:
                    self._replay(namespace, writes)
            except DuplicateKeyError as error:
                raise write_conflict() from error  # a unique value taken meanwhile
        if created:
            # mongoeco's own commit step, told only about the collections created.
            only_created = dataclasses.replace(
                state, touched_namespaces=created, touched_databases=set()
            )
            (
                self._storage,
                self._indexes,
                self._index_data,
                self._search_indexes,
                self._collections,
                self._collection_options,
            ) = self._prepare_transaction_write_set_locked(only_created)
        sequence, changes, pruned_through = self._prepare_committed_changes_locked(
            state.pending_changes
        )
        self._commit_sequence = sequence
        self._committed_changes = changes
        self._change_pruned_through = pruned_through
        self._mvcc_states.pop(writes.session_id, None)
        self._mvcc_version += 1
        self._invalidate_transaction_search_runtime_cache(state)

    @staticmethod
    def _definition(namespace: Namespace, indexes: Any, options: Any) -> tuple[Any, Any]:
        db, coll = namespace
        return indexes.get(db, {}).get(coll), options.get(db, {}).get(coll)

    def _check_unchanged(self, namespace: Namespace, writes: _Writes) -> None:
        """Refuse the commit if a document it wrote changed since its snapshot."""
        db, coll = namespace
        live = self._storage.get(db, {}).get(coll, {})
        before = writes.before.get(namespace, {})
        keys = writes.keys.get(namespace, set())
        for key in keys:
            if live.get(key, _MISSING) is not before.get(key, _MISSING):
                raise write_conflict()
        # Every insert and delete went through the write hooks, or the merge would lose
        # it: the counts must agree (a cheap check of this module's own bookkeeping).
        ours = writes.state.storage.get(db, {}).get(coll, {})
        added = sum((key in ours) - (key in before) for key in keys)
        if len(ours) - len(before) != added:
            logger.error(
                "transaction on %s.%s wrote documents the embedded server did not track; "
                "its commit is refused as a write conflict",
                db,
                coll,
            )
            raise write_conflict()

    def _replay(self, namespace: Namespace, writes: _Writes) -> None:
        """Write the transaction's version of each document it wrote into the live
        collection, with its index entries. Every old entry goes first, so that a
        transaction moving a unique value from one document to another is no conflict."""
        db, coll = namespace
        keys = writes.keys.get(namespace, set())
        if not keys:
            return
        # A collection created without documents may have no storage yet (only its name
        # in the catalogue): the first documents written into it create one.
        live = self._storage.setdefault(db, {}).get(coll)
        if live is None:
            live = self._storage[db][coll] = MemoryCollection()
        ours = writes.state.storage.get(db, {}).get(coll, {})
        for key in keys:
            old = live.get(key, _MISSING)
            if old is not _MISSING:
                document = self._borrow_storage_document(old)
                self._update_indexes_locked(db, coll, key, document, action="delete")
        for key in keys:
            new = ours.get(key, _MISSING)
            if new is _MISSING:
                if key in live:
                    self._delete_storage_document_locked(live, key)
                continue
            document = self._borrow_storage_document(new)
            self._ensure_unique_indexes(
                db,
                coll,
                document,
                exclude_storage_key=key if key in live else None,
                check_id_storage=False,
                scan_payload_id=False,
            )
            self._set_storage_document_locked(live, key, new)
            self._update_indexes_locked(db, coll, key, document, action="insert")
        self._invalidate_search_runtime_cache(db, coll)
