"""What makes a task run: its ``filter`` and its ``watch_projection``.

A filter stays a MongoDB *query* so the server evaluates it everywhere with the same
semantics (planning ``$match``, the late-binding ``find``). A bare aggregation
expression such as ``{"$eq": ["$status", "paid"]}`` is wrapped in ``$expr``. The watch
projection is compiled to an aggregation expression whose value is the snapshot stored
as ``lastObservedValues``; with no projection the snapshot is the whole document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from ..errors import ConfigError

WHOLE_DOCUMENT: Final = "$$ROOT"

# Top-level operators of the query language; any other leading "$" key means the user
# wrote an aggregation expression.
_QUERY_OPERATORS: Final = frozenset(
    {"$and", "$or", "$nor", "$expr", "$text", "$comment", "$jsonSchema", "$where"}
)
_LOGICAL: Final = ("$and", "$or", "$nor")
# Operators that run JavaScript on the server: refused wherever a filter can come from.
FORBIDDEN_OPERATORS: Final = frozenset({"$where", "$function", "$accumulator"})


def _non_empty_mapping(value: object, option: str, expected: str) -> Mapping[str, Any] | None:
    """``value`` as a mapping without server-side code, or ``None`` if absent or empty."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(option, value, f"expected {expected}")
    check_no_server_code(value, option)
    return value or None


def normalize_filter(value: object, option: str = "filter") -> dict[str, Any] | None:
    """The filter as a query document (``None`` matches every document)."""
    value = _non_empty_mapping(value, option, "a query or aggregation expression dict")
    if value is None:
        return None
    if _is_expression(value):
        return {"$expr": dict(value)}
    return dict(value)


def check_no_server_code(value: object, option: str) -> None:
    """``ConfigError`` if ``value`` uses an operator that runs code on the server."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in FORBIDDEN_OPERATORS:
                raise ConfigError(option, value, f"{key} runs code on the server; not allowed")
            check_no_server_code(item, option)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_no_server_code(item, option)


# Variables whose value is the time of evaluation: a filter using one can start or stop
# matching with no write to the document.
CLOCK_VARIABLES: Final = ("$$NOW", "$$CLUSTER_TIME")


def reads_the_clock(value: object) -> bool:
    """Whether a filter uses ``$$NOW`` or ``$$CLUSTER_TIME`` anywhere."""
    if isinstance(value, str):
        return any(value == v or value.startswith(v + ".") for v in CLOCK_VARIABLES)
    if isinstance(value, Mapping):
        return any(reads_the_clock(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(reads_the_clock(item) for item in value)
    return False


def _is_expression(value: Mapping[str, Any]) -> bool:
    keys = list(value)
    if not all(isinstance(k, str) and k.startswith("$") for k in keys):
        return False
    if any(k not in _QUERY_OPERATORS for k in keys):
        return True
    # {"$and": [{"$eq": [...]}, ...]} is an expression; {"$and": [{"a": 1}]} a query.
    for key in _LOGICAL:
        items = value.get(key)
        if isinstance(items, list) and any(
            isinstance(i, Mapping) and i and _is_expression(i) for i in items
        ):
            return True
    return False


def compile_watch_projection(value: object, option: str = "watch_projection") -> Any:
    """The aggregation expression computing a document's watched snapshot."""
    value = _non_empty_mapping(value, option, "a projection dict such as {'status': 1}")
    if value is None:
        return WHOLE_DOCUMENT
    compiled: dict[str, Any] = {}
    for path, spec in value.items():
        if not isinstance(path, str) or not path or path.startswith("$"):
            raise ConfigError(option, value, f"bad field path {path!r}")
        segments = path.split(".")
        if any(not s for s in segments):
            raise ConfigError(option, value, f"bad field path {path!r}")
        _insert(compiled, segments, _field_expression(path, spec, value, option), value, option)
    return compiled


def _field_expression(path: str, spec: object, whole: object, option: str) -> Any:
    if spec is True or (type(spec) in (int, float) and spec == 1):
        return f"${path}"
    if spec is False or (type(spec) in (int, float) and spec == 0):
        raise ConfigError(
            option,
            whole,
            f"exclusion ({path!r}: {spec!r}) is not supported; list the fields to watch instead",
        )
    if isinstance(spec, Mapping) or (isinstance(spec, str) and spec.startswith("$")):
        return spec  # a computed field: an aggregation expression
    raise ConfigError(option, whole, f"{path!r}: expected 1, True or an expression")


def _insert(
    target: dict[str, Any], segments: list[str], expr: Any, whole: object, option: str
) -> None:
    for segment in segments[:-1]:
        child = target.setdefault(segment, {})
        if not isinstance(child, dict) or _is_operator(child):
            raise ConfigError(option, whole, f"path collision at {segment!r}")
        target = child
    if segments[-1] in target:
        raise ConfigError(option, whole, f"path collision at {'.'.join(segments)!r}")
    target[segments[-1]] = expr


def _is_operator(value: Mapping[str, Any]) -> bool:
    return any(isinstance(k, str) and k.startswith("$") for k in value)


def trigger_fingerprint(filter_: Mapping[str, Any] | None, watch_expression: Any) -> str:
    """A stable fingerprint of what makes a task run (its filter and watch projection):
    equal for equal triggers on every instance, whatever the key order."""
    trigger = {"filter": filter_, "watch": watch_expression}
    text = json_util.dumps(trigger, json_options=CANONICAL_JSON_OPTIONS, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
