"""The tasks registered on one instance, indexed the ways the threads look them up."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import ConfigError
from .definition import TaskDefinition


class TaskRegistry:
    """Task definitions by name, by source collection and by tasks collection."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskDefinition] = {}

    def add(self, definition: TaskDefinition) -> None:
        """Add ``definition``; ``ConfigError`` if its name is taken."""
        if definition.name in self._by_name:
            raise ConfigError(
                "task", definition.name, "a task with this name is already registered"
            )
        self._by_name[definition.name] = definition

    def __getitem__(self, name: str) -> TaskDefinition:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def for_collection(self, collection: str) -> list[TaskDefinition]:
        """Tasks watching ``collection``."""
        return [d for d in self if d.collection == collection]

    @property
    def collections(self) -> list[str]:
        """Watched source collections, in registration order."""
        return list(dict.fromkeys(d.collection for d in self))

    @property
    def tasks_collections(self) -> dict[str, list[TaskDefinition]]:
        """Tasks grouped by the collection that holds their records."""
        grouped: dict[str, list[TaskDefinition]] = {}
        for definition in self:
            grouped.setdefault(definition.tasks_collection, []).append(definition)
        return grouped
