"""``$in`` / ``$nin`` matching in O(1) per document instead of O(length of the list).

mongoeco 4.11.0 matches ``{field: {$in: values}}`` in one of two ways, both linear in
the list for every document:

- the compiled matcher (``CompiledQuery``, used by find, update, delete and a leading
  ``$match``) compares the candidate with each item in turn;
- the interpreter (``QueryEngine._evaluate_in``) builds a hash set of the items again
  for every document.

So ``{_id: {$in: ids}}`` over ``n`` documents costs ``n * len(ids)`` comparisons - about
3 s for 2 000 documents and 1 000 ids, which is what the planner sends for each batch.

``install`` routes long lists from the compiled matcher to the interpreter, and caches
the interpreter's prepared set by the identity of the list (a tuple that lives as long
as the query plan). Both are private methods of mongoeco 4.11.0 (pinned in setup.cfg);
there is no documented seam for matching. Results are unchanged: the interpreter is
mongoeco's reference matcher, and the cache returns what the original computes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from mongoeco.core.compiled_query import CompiledQuery
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.query_plan import InCondition, NotInCondition

_CACHE_SIZE = 64
# Short lists are cheap to compare one by one; caching them would only churn the cache.
_MIN_LENGTH = 16

_cache: OrderedDict[tuple[int, bool], tuple[tuple[Any, ...], Any]] = OrderedDict()
_lock = threading.Lock()
_installed = False


def _long_membership(node: object) -> bool:
    return isinstance(node, (InCondition, NotInCondition)) and len(node.values) >= _MIN_LENGTH


def interpreted(compiled: CompiledQuery, node: Any) -> str:
    """Code for ``compiled`` that evaluates ``node`` with mongoeco's interpreter: the
    same call ``CompiledQuery`` emits for the operators it does not compile."""
    node_key = compiled._store("node", node)
    return f"match_plan(doc, {node_key}, dialect=dialect, collation=collation, variables=variables)"


def install() -> None:
    """Patch mongoeco's membership matching (idempotent)."""
    global _installed
    if _installed:
        return
    prepare_original = QueryEngine._prepare_membership_values.__func__
    node_to_code_original = CompiledQuery._node_to_code

    def prepare(
        cls: Any,
        values: tuple[Any, ...],
        *,
        null_matches_undefined: bool,
        collation: Any = None,
    ) -> Any:
        if collation is not None or len(values) < _MIN_LENGTH:
            return prepare_original(
                cls, values, null_matches_undefined=null_matches_undefined, collation=collation
            )
        key = (id(values), null_matches_undefined)
        with _lock:
            entry = _cache.get(key)
            # The entry keeps its tuple alive, so an equal id means the same tuple.
            if entry is not None and entry[0] is values:
                _cache.move_to_end(key)
                return entry[1]
        prepared = prepare_original(cls, values, null_matches_undefined=null_matches_undefined)
        with _lock:
            _cache[key] = (values, prepared)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return prepared

    def node_to_code(self: CompiledQuery, node: Any, depth: int) -> str:
        if not _long_membership(node):
            return node_to_code_original(self, node, depth)  # type: ignore[no-any-return]
        return interpreted(self, node)

    QueryEngine._prepare_membership_values = classmethod(prepare)
    CompiledQuery._node_to_code = node_to_code
    _installed = True
