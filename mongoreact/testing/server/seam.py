"""The seam between the embedded server and mongoeco: every internal it relies on.

The server builds on mongoeco's engine and wire executor, pinned to one version
(``MONGOECO_VERSION``), and reaches past their public surface in three ways, listed
here and checked at start (:func:`check`), so that another mongoeco fails at once with
a message naming what changed rather than later and quietly:

- private names it reads or calls (``PRIVATE_NAMES``): a rename would fail loudly, but
  only when the code path runs;
- methods it overrides (``OVERRIDDEN``): a rename would fail silently, the override no
  longer called and isolation or unique-index semantics quietly lost. Start checks that
  each still exists; ``tests/unit/test_server_seam.py`` runs a workload and checks that
  mongoeco still calls each one;
- methods it replaces on mongoeco's classes (``PATCHED``, in ``brackets.py`` and
  ``membership.py``; ``CompiledQuery._node_to_code`` by both, one on top of the other).

Private modules it imports are in ``PRIVATE_MODULES``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Any, Final

from .._interpreter import MONGOECO_VERSION

MEMORY_ENGINE: Final = "mongoeco.engines.memory.MemoryEngine"
MEMORY_COLLECTION: Final = "mongoeco.engines._memory_collection.MemoryCollection"
QUERY_ENGINE: Final = "mongoeco.core.filtering.QueryEngine"
COMPILED_QUERY: Final = "mongoeco.core.compiled_query.CompiledQuery"
CLIENT: Final = "mongoeco.api.AsyncMongoClient"

# Private names read or called, by class. Those set per instance (in __init__) are
# checked on a fresh instance.
PRIVATE_NAMES: Final[dict[str, tuple[str, ...]]] = {
    MEMORY_ENGINE: (
        "_borrow_storage_document", "_collection_options", "_collections",
        "_document_state_rollback_locked", "_ensure_publication_boundary", "_get_lock",
        "_index_data", "_index_key", "_indexes", "_invalidate_search_runtime_cache",
        "_invalidate_transaction_search_runtime_cache", "_meta_lock", "_mvcc_states",
        "_mvcc_version", "_prepare_committed_changes_locked",
        "_prepare_transaction_write_set_locked", "_publication_stack", "_search_indexes",
        "_storage", "_storage_key", "_storage_view", "_sync_session_state",
        "_unique_key_error", "_update_indexes_locked",
    ),
    MEMORY_COLLECTION: ("_values",),
    CLIENT: ("_change_hub",),
}  # fmt: skip

# Methods of MemoryEngine that FastMemoryEngine (storage_engine.py) and
# DocumentConflicts (isolation.py) override: mongoeco must go on calling them.
OVERRIDDEN: Final[dict[str, tuple[str, ...]]] = {
    MEMORY_ENGINE: (
        "_start_session_transaction", "_abort_session_transaction", "_active_mvcc_state",
        "_commit_session_transaction", "_set_storage_document_locked",
        "_delete_storage_document_locked", "scan_find_semantics", "update_with_operation",
        "delete_with_operation", "_candidate_items_for_plan_locked",
        "_insert_documents_impl", "get_document", "_ensure_unique_indexes",
    ),
}  # fmt: skip

# Methods replaced on mongoeco's classes.
PATCHED: Final[dict[str, tuple[str, ...]]] = {
    QUERY_ENGINE: (
        "_comparison_matches_candidate", "_match_top_level_comparison",
        "_prepare_membership_values",
    ),
    COMPILED_QUERY: ("_node_to_code",),
}  # fmt: skip

PRIVATE_MODULES: Final = (
    "mongoeco.engines._memory_collection",
    "mongoeco.wire._executor_support",
    "mongoeco.wire._session_identity",
)


class SeamError(RuntimeError):
    """The installed mongoeco is not the one the embedded server was written against."""


def _resolve(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _resolve_or_none(path: str) -> Any:
    try:
        return _resolve(path)
    except (ImportError, AttributeError):
        return None


def _instance(path: str) -> Any:
    """A fresh instance of ``path``'s class, for names set in ``__init__``."""
    if path == CLIENT:
        from mongoeco.engines.memory import MemoryEngine

        return _resolve(path)(engine=MemoryEngine())
    return _resolve(path)()


def problems() -> list[str]:
    """What differs from what the server relies on (empty: nothing)."""
    found: list[str] = []
    try:
        installed = importlib.metadata.version("mongoeco")
    except importlib.metadata.PackageNotFoundError:
        return ["mongoeco is not installed"]
    if installed != MONGOECO_VERSION:
        found.append(f"mongoeco {installed} is installed; the server needs {MONGOECO_VERSION}")
    found.extend(
        f"module {module} is gone"
        for module in PRIVATE_MODULES
        if importlib.util.find_spec(module) is None
    )
    for group in (PRIVATE_NAMES, OVERRIDDEN, PATCHED):
        for path, names in group.items():
            cls = _resolve_or_none(path)
            if cls is None:
                found.append(f"{path} is gone")
                continue
            missing = [name for name in names if not hasattr(cls, name)]
            if missing and group is PRIVATE_NAMES:
                instance = _instance(path)
                missing = [name for name in missing if not hasattr(instance, name)]
            found.extend(f"{path}.{name} is gone" for name in missing)
    return found


def check() -> None:
    """Refuse to start on a mongoeco that differs from what the server relies on."""
    found = problems()
    if found:
        raise SeamError(
            "the embedded MongoDB server cannot run on this mongoeco: "
            + "; ".join(found)
            + f" (install mongoeco=={MONGOECO_VERSION}, as mongoreact's [test] extra does)"
        )
