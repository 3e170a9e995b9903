"""``$merge`` on any unique key, with every ``whenMatched`` / ``whenNotMatched`` mode.

mongoeco 4.11.0 accepts ``$merge`` only with ``on: "_id"``. This module runs the stages
before ``$merge`` through mongoeco and applies the merge itself, document by document, as
MongoDB does (``$merge`` is not atomic on MongoDB either): ``on`` may name any fields
backed by a unique index; ``whenMatched`` may be ``merge``, ``replace``,
``keepExisting``, ``fail`` or an update pipeline that sees the incoming document as
``$$new`` (or the variables given in ``let``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mongoeco.core.aggregation import evaluate_expression
from mongoeco.core.bson_ordering import bson_equality_key
from mongoeco.types import ObjectId

from . import errors
from .errors import CommandError

_WHEN_MATCHED_MODES = frozenset({"merge", "replace", "keepExisting", "fail"})
_WHEN_NOT_MATCHED_MODES = frozenset({"insert", "discard", "fail"})


def split_merge(pipeline: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any] | None:
    """``(stages before $merge, $merge spec)`` when the pipeline ends with ``$merge``."""
    if pipeline and isinstance(pipeline[-1], dict) and "$merge" in pipeline[-1]:
        return pipeline[:-1], pipeline[-1]["$merge"]
    return None


async def apply_merge(
    client: Any,
    db: str,
    documents: list[dict[str, Any]],
    spec: Any,
    breathe: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Merge ``documents`` (the output of the preceding stages) into the target,
    calling ``breathe`` between documents (pacing.py: a batch of a thousand writes
    held every other connection, a leader's lease renewal included)."""
    if isinstance(spec, str):
        spec = {"into": spec}
    if not isinstance(spec, dict):
        raise CommandError(errors.FAILED_TO_PARSE, "$merge requires a string or an object")
    into = spec.get("into")
    if isinstance(into, dict):
        target_db, target_coll = into.get("db", db), into.get("coll")
    else:
        target_db, target_coll = db, into
    if not isinstance(target_coll, str) or not target_coll:
        raise CommandError(errors.FAILED_TO_PARSE, "$merge 'into' must name a collection")
    on = spec.get("on", "_id")
    fields = [on] if isinstance(on, str) else list(on)
    when_matched = spec.get("whenMatched", "merge")
    when_not_matched = spec.get("whenNotMatched", "insert")
    if not isinstance(when_matched, list) and when_matched not in _WHEN_MATCHED_MODES:
        raise CommandError(errors.BAD_VALUE, f"unknown whenMatched mode: {when_matched!r}")
    if when_not_matched not in _WHEN_NOT_MATCHED_MODES:
        raise CommandError(errors.BAD_VALUE, f"unknown whenNotMatched mode: {when_not_matched!r}")
    let = spec.get("let", {"new": "$$ROOT"})

    target = client.get_database(target_db).get_collection(target_coll)
    if fields != ["_id"]:
        await _require_unique_index(target, fields)
    keys = [_key(document, fields) for document in documents]
    found = await _existing(target, keys, fields)
    for document, key in zip(documents, keys, strict=True):
        if breathe is not None:
            await breathe()
        if found is None:
            existing = await target.find_one(key)
        else:
            existing = found.get(_equality(key.values()))
        if existing is None:
            inserted = await _not_matched(target, document, when_not_matched)
            if found is not None and inserted is not None:
                found[_equality(key.values())] = inserted  # a later duplicate matches it
        else:
            await _matched(target, existing, document, when_matched, let, key)


async def _existing(
    target: Any, keys: list[dict[str, Any]], fields: list[str]
) -> dict[tuple[Any, ...], dict[str, Any]] | None:
    """The target documents matching ``keys``, by key, read in one query; ``None`` when
    a key cannot be looked up exactly that way (then each key is looked up alone).

    One ``$in`` per field selects a superset in one pass over the collection (a lookup
    per document would scan the collection once per document); the exact match is by
    BSON equality of the whole key. An array in an ``on`` field matches by any of its
    elements, which a key lookup cannot mirror: such targets take the slow path.
    """
    if not keys:
        return {}
    query = {name: {"$in": [key[name] for key in keys]} for name in fields}
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    async for existing in target.find(query):
        values = [_value(existing, name) for name in fields]
        if any(isinstance(value, list) for value in values):
            return None
        found[_equality(values)] = existing
    return found


def _equality(values: Any) -> tuple[Any, ...]:
    # mongoeco 4.11.0's key for BSON equality (1, 1.0 and Int64(1) are one key).
    return tuple(bson_equality_key(value) for value in values)


def _value(document: dict[str, Any], name: str) -> Any:
    value: Any = document
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def _require_unique_index(target: Any, fields: list[str]) -> None:
    indexes = await target.index_information()
    for index in indexes.values():
        keys = [name for name, _direction in index.get("key", [])]
        if index.get("unique") and sorted(keys) == sorted(fields):
            return
    raise CommandError(
        errors.LOCATION_51183_NO_UNIQUE_INDEX,
        "Cannot find index to verify that join fields will be unique",
    )


def _key(document: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    key: dict[str, Any] = {}
    for name in fields:
        value = _value(document, name)
        if value is None or isinstance(value, list):
            raise CommandError(
                51132,
                f"$merge write error: 'on' field '{name}' cannot be missing, null, undefined "
                "or an array",
            )
        key[name] = value
    return key


async def _not_matched(target: Any, document: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """Insert ``document`` (per ``mode``); the document inserted, if any."""
    if mode == "discard":
        return None
    if mode == "fail":
        raise CommandError(
            13113, "$merge could not find a matching document in the target collection"
        )
    if "_id" not in document:
        document = {"_id": ObjectId(), **document}
    await target.insert_one(document)
    return document


async def _matched(
    target: Any,
    existing: dict[str, Any],
    document: dict[str, Any],
    mode: Any,
    let: Any,
    key: dict[str, Any],
) -> None:
    selector = {"_id": existing["_id"]}
    incoming = {name: value for name, value in document.items() if name != "_id"}
    if isinstance(mode, list):
        variables = {
            name: evaluate_expression(document, expression) for name, expression in let.items()
        }
        await target.update_one(selector, mode, let=variables)
    elif mode == "merge":
        if incoming:
            await target.update_one(selector, {"$set": incoming})
    elif mode == "replace":
        await target.replace_one(selector, incoming)
    elif mode == "fail":
        # As MongoDB reports it: which unique key, and the value that collided.
        raise CommandError(
            errors.DUPLICATE_KEY,
            f"E11000 duplicate key error collection: {target.name} ($merge whenMatched: fail)",
            details={"keyPattern": dict.fromkeys(key, 1), "keyValue": dict(key)},
        )
