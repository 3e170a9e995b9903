"""``updateDescription`` for update events, computed from the pre- and post-image."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

Path = tuple[str | int, ...]


def update_description(
    before: dict[str, Any], after: dict[str, Any], *, set_paths: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, list[str | int]]]:
    """Describe how ``before`` became ``after`` the way MongoDB's update events do, and
    the ``disambiguatedPaths`` of the paths it names.

    Changed leaves get dotted paths, inside sub-documents and arrays alike (an element
    appended by ``$push`` is ``"tags.3"``); a shortened array is a ``truncatedArrays``
    entry; a value whose type changed is reported whole, and so is an array a ``$set``
    named itself (``set_paths``: MongoDB logs such a field whole).
    """
    diff = _Diff(frozenset(set_paths))
    diff.documents((), before, after)
    description = {
        "updatedFields": {_dotted(path): value for path, value in diff.updated},
        "removedFields": [_dotted(path) for path in diff.removed],
        "truncatedArrays": [
            {"field": _dotted(path), "newSize": size} for path, size in diff.truncated
        ],
    }
    named = [path for path, _ in diff.updated] + diff.removed + [p for p, _ in diff.truncated]
    ambiguous = {_dotted(path): list(path) for path in named if _ambiguous(path)}
    return description, ambiguous


class _Diff:
    def __init__(self, set_paths: frozenset[str]) -> None:
        self.set_paths = set_paths
        self.updated: list[tuple[Path, Any]] = []
        self.removed: list[Path] = []
        self.truncated: list[tuple[Path, int]] = []

    def documents(self, prefix: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
        for key, value in after.items():
            if key in before:
                self.value((*prefix, key), before[key], value)
            else:
                self.updated.append(((*prefix, key), value))
        self.removed.extend((*prefix, key) for key in before if key not in after)

    def value(self, path: Path, old: Any, new: Any) -> None:
        if isinstance(old, dict) and isinstance(new, dict) and old and new:
            self.documents(path, old, new)
        elif (
            isinstance(old, list) and isinstance(new, list) and _dotted(path) not in self.set_paths
        ):
            self.arrays(path, old, new)
        elif not _same(old, new):
            self.updated.append((path, new))

    def arrays(self, path: Path, old: list[Any], new: list[Any]) -> None:
        for index, value in enumerate(new):
            if index < len(old):
                self.value((*path, index), old[index], value)
            else:
                self.updated.append(((*path, index), value))
        if len(new) < len(old):
            self.truncated.append((path, len(new)))


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def _ambiguous(path: Path) -> bool:
    # A numeric field name reads like an array index, and a dotted one like two fields.
    return any(isinstance(part, str) and (part.isdigit() or "." in part) for part in path)


def _same(left: Any, right: Any) -> bool:
    # bool == int and 1 == 1.0 in Python but not in BSON: a type change is a change.
    return type(left) is type(right) and bool(left == right)
