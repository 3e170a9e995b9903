"""``updateDescription`` for update events, computed from the pre- and post-image."""

from __future__ import annotations

from typing import Any


def update_description(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Describe how ``before`` became ``after`` the way MongoDB's update events do.

    Changed leaves inside sub-documents present on both sides get dotted paths; a changed
    array or a value whose type changed is reported whole, as MongoDB does for most writes.
    """
    updated: dict[str, Any] = {}
    removed: list[str] = []
    _diff("", before, after, updated, removed)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}


def _diff(
    prefix: str,
    before: dict[str, Any],
    after: dict[str, Any],
    updated: dict[str, Any],
    removed: list[str],
) -> None:
    for key, value in after.items():
        path = f"{prefix}{key}"
        if key not in before:
            updated[path] = value
            continue
        old = before[key]
        if isinstance(old, dict) and isinstance(value, dict) and old and value:
            _diff(f"{path}.", old, value, updated, removed)
        elif not _same(old, value):
            updated[path] = value
    removed.extend(f"{prefix}{key}" for key in before if key not in after)


def _same(left: Any, right: Any) -> bool:
    # bool == int and 1 == 1.0 in Python but not in BSON: a type change is a change.
    return type(left) is type(right) and bool(left == right)
