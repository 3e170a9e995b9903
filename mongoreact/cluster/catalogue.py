"""The cluster's catalogue of task definitions.

Every instance publishes the definitions it registers (``specs``) in the globals
collection and touches them while it runs. The leader plans every task published
recently, by whichever instance: an instance that registers fewer tasks, or an older
``handler_version``, must not make the cluster stop planning the others.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Final

from ..clock import ServerClock, as_utc
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..store.globals import Publication, SpecStore
from ..store.tasks import TaskStore
from .specs import definition_from_spec, spec_of, trigger_hash

logger = logging.getLogger(__name__)

Document = dict[str, Any]

# A published task nobody has registered for this long is no longer planned.
SPEC_TTL: Final = dt.timedelta(days=7)
SPEC_TOUCH_INTERVAL: Final = 60.0  # seconds


class Catalogue:
    """Publishes this instance's definitions and reads everybody's."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        specs: SpecStore,
        task_store: TaskStore,
        clock: ServerClock,
    ) -> None:
        self._registry = registry
        self._specs = specs
        self._tasks = task_store
        self._clock = clock
        self._touched = 0.0
        # When each of our definitions became the published one (server time).
        self._published: dict[str, dt.datetime] = {}
        # The newest published spec of each task seen here, and when it was published.
        self._seen: dict[str, tuple[dt.datetime, Document]] = {}

    def publish(self) -> None:
        """Publish every registered definition and apply its evolution policy: a changed
        trigger is reconciled, a new ``handler_version`` reprocesses records."""
        for definition in self._registry:
            self._publish(definition, evolve=True)
        self._touched = time.monotonic()

    def _publish(self, definition: TaskDefinition, *, evolve: bool) -> None:
        published = self._specs.publish(spec_of(definition))
        if published.published_at is not None and published.stored is not None:
            self._published[definition.name] = published.published_at
            # Known here from now on: should this instance lead after the globals went
            # back to an older spec, it plans with (and restores) this one.
            self._seen[definition.name] = (published.published_at, published.stored)
        if evolve:
            self._evolve(definition, published)

    def _evolve(self, definition: TaskDefinition, published: Publication) -> None:
        """Apply ``definition``'s evolution policy to what publishing it found."""
        if published.older:
            logger.warning(
                "task %s: another instance runs a newer handler_version; the cluster "
                "plans with its definition",
                definition.name,
            )
            return
        if published.trigger_changed and definition.evolution.reconcile_on_trigger_change:
            # A new trigger is a new reconciliation key: the leader reconciles it.
            logger.info("task %s: trigger changed; it will be reconciled", definition.name)
        policy = definition.evolution.on_handler_version_change
        if published.upgraded and policy != "none":
            count = self._tasks.reprocess(definition, failed_only=policy == "reprocess_failed")
            logger.info(
                "task %s: handler_version %d: %s reset %d record(s) to pending",
                definition.name, definition.evolution.handler_version, policy, count,
            )  # fmt: skip

    def keep_fresh(self) -> None:
        """Touch this instance's definitions, at most every ``SPEC_TOUCH_INTERVAL``, so
        they do not expire while it runs; publish again those the globals lost."""
        if time.monotonic() - self._touched <= SPEC_TOUCH_INTERVAL:
            return
        names = [d.name for d in self._registry]
        stored = self._specs.stored(names)
        for definition in self._registry:
            if self._rolled_back(definition, stored.get(definition.name)):
                logger.warning(
                    "task %s: the published definition is missing or older than this "
                    "instance's (the globals were dropped or restored from a backup); "
                    "publishing it again",
                    definition.name,
                )
                self._publish(definition, evolve=False)
        self._specs.touch(names)
        self._touched = time.monotonic()

    def _rolled_back(self, definition: TaskDefinition, stored: Document | None) -> bool:
        """Whether the stored spec of ``definition`` went back to before this instance
        published it: gone, a lower version, or another trigger published earlier
        than ours was (a later deployment publishes later, a backup is older)."""
        if stored is None:
            return True
        mine = definition.evolution.handler_version
        theirs = int(stored.get("handlerVersion", 1))
        if theirs != mine:
            return theirs < mine
        ours_at = self._published.get(definition.name)
        stored_at = stored.get("publishedAt")
        return (
            stored.get("triggerHash") != trigger_hash(definition)
            and ours_at is not None
            and isinstance(stored_at, dt.datetime)
            and as_utc(stored_at) < ours_at
        )

    def planning_registry(self) -> TaskRegistry:
        """Every task some instance registers (recently): the leader plans them all, each
        with the published definition (the newest ``handler_version``'s, the last one
        published among equal versions), whatever the leader registers itself: during a
        rolling deploy an old leader plans with the new definition, not its own."""
        registry = TaskRegistry()
        local = {d.name: d for d in self._registry}
        for stored in self._specs.load(self._clock.now() - SPEC_TTL):
            spec = self._newest_seen(stored)
            name = str(spec.get("task"))
            mine = local.pop(name, None)
            version = mine.evolution.handler_version if mine else 0
            newer = int(spec.get("handlerVersion", 1)) >= version
            try:
                registry.add(definition_from_spec(spec) if newer or mine is None else mine)
            except Exception:
                logger.exception("ignoring the unreadable published definition of %r", name)
        for definition in local.values():  # not published yet (should not happen)
            registry.add(definition)
        return registry

    def _newest_seen(self, stored: Document) -> Document:
        """``stored``, unless a spec of the task published later was seen here before:
        the globals went back in time (restored from a backup). Planning with the
        restored, older definition even for a heartbeat would mark the documents only
        the newer one matches as no longer matching, and run their handled versions
        again once it is back; the newer spec is kept and published again instead."""
        name = str(stored.get("task"))
        at = stored.get("publishedAt")
        seen = self._seen.get(name)
        if seen is not None and isinstance(at, dt.datetime) and as_utc(at) < seen[0]:
            newer = seen[1]
            if _trigger_and_version(newer) != _trigger_and_version(stored):
                logger.warning(
                    "task %s: the published definition went back to an older one (the "
                    "globals restored from a backup?); keeping and publishing again the "
                    "newer one",
                    name,
                )
                self._specs.restore(newer, stored)
                return newer
        if isinstance(at, dt.datetime):
            self._seen[name] = (as_utc(at), stored)
        return stored


def _trigger_and_version(spec: Document) -> tuple[Any, int]:
    return spec.get("triggerHash"), int(spec.get("handlerVersion", 1))
