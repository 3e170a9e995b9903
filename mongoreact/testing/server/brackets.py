"""Comparison operators match only values of the query value's type, as in MongoDB.

MongoDB's ``$gt``, ``$gte``, ``$lt`` and ``$lte`` compare a field only with a query value
of the same BSON type bracket (numbers of any width together, strings, dates,
ObjectIds, booleans, timestamps, binary data): ``{due: {$lte: now}}`` never matches a
``due`` that is null, a number or a string. mongoeco 4.11.0 compares across types by
the BSON sort order instead, so that query also matched every null, number and string
(all of which sort before dates), and ``{n: {$gt: 3}}`` matched every string.

``install`` adds the bracket check to mongoeco's two comparison functions, which both
its interpreter and (for top-level fields) its compiled matcher call, and routes
comparisons on dotted paths, which the compiled matcher evaluates inline, to the
interpreter. Both are private methods of mongoeco 4.11.0 (pinned); there is no
documented seam for matching. ``$expr`` comparisons are untouched: aggregation
expressions do compare across types by the sort order, in MongoDB too.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from mongoeco.core.bson_scalars import is_bson_numeric
from mongoeco.core.compiled_query import CompiledQuery
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.query_plan import (
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
)

from .membership import interpreted

# The comparison operators (``$gt``, ``$gte``, ``$lt``, ``$lte``) as query plan nodes.
COMPARISONS = (
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
)
_installed = False


def bracket(value: Any) -> str | None:
    """The type bracket a comparison confines ``value``'s matches to, or ``None`` for
    values this module leaves to mongoeco (null, documents, arrays, MinKey, MaxKey,
    regular expressions)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)) or is_bson_numeric(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime.datetime):
        return "date"
    if isinstance(value, (bytes, uuid.UUID)):
        return "binary"
    name = type(value).__name__
    if name in ("ObjectId", "Timestamp", "Binary"):
        return name.lower()
    return None


def _other_bracket(candidate: Any, target: Any) -> bool:
    """Whether a comparison with ``target`` can never match scalar ``candidate``."""
    wanted = bracket(target)
    return wanted is not None and not isinstance(candidate, list) and bracket(candidate) != wanted


def install() -> None:
    """Patch mongoeco's comparisons (idempotent)."""
    global _installed
    if _installed:
        return
    top_level_original = QueryEngine._match_top_level_comparison.__func__
    candidate_original = QueryEngine._comparison_matches_candidate.__func__
    node_to_code_original = CompiledQuery._node_to_code

    def top_level(cls: Any, doc: dict[str, Any], field: str, target: Any, *a: Any, **k: Any) -> Any:
        if field in doc and _other_bracket(doc[field], target):
            return False
        return top_level_original(cls, doc, field, target, *a, **k)

    def candidate(cls: Any, value: Any, target: Any, *a: Any, **k: Any) -> Any:
        if _other_bracket(value, target):
            return False
        return candidate_original(cls, value, target, *a, **k)

    def node_to_code(self: CompiledQuery, node: Any, depth: int) -> str:
        if not (isinstance(node, COMPARISONS) and "." in node.field):
            return node_to_code_original(self, node, depth)  # type: ignore[no-any-return]
        return interpreted(self, node)

    QueryEngine._match_top_level_comparison = classmethod(top_level)
    QueryEngine._comparison_matches_candidate = classmethod(candidate)
    CompiledQuery._node_to_code = node_to_code
    _installed = True
