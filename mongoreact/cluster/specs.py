"""Task definitions as the cluster shares them.

Every instance publishes the planning half of its tasks (collection, filter, watch
projection, debounce, retry reset) to the globals collection. The leader plans every
published task, including those it does not run itself, so instances that register
different task sets cannot make the cluster miss work. Filters and projections are kept
as canonical Extended JSON strings: they may hold ``$``-keys and any BSON value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import attrs
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from ..config.definition import CleanupPolicy, Evolution, TaskDefinition
from ..config.durations import to_milliseconds
from ..config.retry import DEFAULT_RETRY_POLICY
from ..config.triggers import trigger_fingerprint
from ..errors import MongoReactError

SPEC_VERSION: Final = 1


def _json(value: Any) -> str:
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def trigger_hash(definition: TaskDefinition) -> str:
    """A stable fingerprint of what makes the task run (filter and watch projection)."""
    return trigger_fingerprint(definition.filter, definition.watch_expression)


def reconciliation_key(definition: TaskDefinition) -> str:
    """What marks ``definition`` reconciled: its name and trigger hash. A definition
    whose filter or watch projection changed is a different key, so neither a scan of
    the old one (its checkpoint, its finish) nor an old leader can mark it done."""
    return f"{definition.name}@{trigger_hash(definition)}"


def is_reconciled(definition: TaskDefinition, done: set[str]) -> bool:
    """Whether ``done`` (reconciliation keys) covers ``definition``: its own key, or,
    with ``reconcile_on_trigger_change`` off, any definition of the task."""
    if reconciliation_key(definition) in done:
        return True
    if definition.evolution.reconcile_on_trigger_change:
        return False
    return any(key.rpartition("@")[0] == definition.name for key in done)


def spec_of(definition: TaskDefinition) -> dict[str, Any]:
    """What the leader needs to plan ``definition`` without its handler."""
    return {
        "specVersion": SPEC_VERSION,
        "task": definition.name,
        "collection": definition.collection,
        "filter": _json(definition.filter),
        "watchExpression": _json(definition.watch_expression),
        "debounceMs": definition.debounce_ms,
        "maxDebounceMs": definition.max_debounce_ms,
        "resetRetriesOnDataChange": definition.retry_policy.reset_retries_on_data_change,
        "triggerHash": trigger_hash(definition),
        "handlerVersion": definition.evolution.handler_version,
        "reconcileOnTriggerChange": definition.evolution.reconcile_on_trigger_change,
        "deleteWhen": definition.cleanup_policy.delete_when,
        "keepForMs": to_milliseconds(definition.cleanup_policy.keep_for),
        "recheckMs": (
            to_milliseconds(definition.recheck_interval) if definition.recheck_interval else None
        ),
    }


def _not_here(_ctx: object) -> None:
    raise MongoReactError("this task is planned here but registered on other instances")


def definition_from_spec(spec: dict[str, Any]) -> TaskDefinition:
    """A plan-only definition (no handler) for a task published by another instance."""
    reset = bool(spec.get("resetRetriesOnDataChange", True))
    policy = DEFAULT_RETRY_POLICY
    if not reset:
        policy = attrs.evolve(policy, reset_retries_on_data_change=False)
    filter_ = json_util.loads(spec["filter"]) or None
    return TaskDefinition(
        name=spec["task"],
        collection=spec["collection"],
        handler=_not_here,
        filter=filter_,
        watch_projection=None,
        watch_expression=json_util.loads(spec["watchExpression"]),
        debounce=dt.timedelta(milliseconds=int(spec["debounceMs"])),
        max_debounce=dt.timedelta(milliseconds=int(spec["maxDebounceMs"])),
        retry_policy=policy,
        cleanup_policy=CleanupPolicy(
            delete_when=str(spec.get("deleteWhen", "sourceDocumentDeleted")),
            keep_for=dt.timedelta(milliseconds=int(spec.get("keepForMs", 86_400_000))),
        ),
        execution_history_limit=0,
        evolution=Evolution(
            handler_version=int(spec.get("handlerVersion", 1)),
            reconcile_on_trigger_change=bool(spec.get("reconcileOnTriggerChange", True)),
        ),
        # Older instances published a recheck with an empty filter (nothing to
        # re-evaluate): planning such a task needs none.
        recheck_interval=(
            dt.timedelta(milliseconds=int(spec["recheckMs"]))
            if spec.get("recheckMs") and filter_ is not None
            else None
        ),
    )


def planning_signature(definitions: list[TaskDefinition]) -> tuple[Any, ...]:
    """Changes whenever what the planner must do changes."""
    keys = (
        "collection", "triggerHash", "debounceMs", "maxDebounceMs", "resetRetriesOnDataChange",
        "recheckMs",
    )  # fmt: skip
    return tuple(sorted((d.name, *(spec_of(d)[k] for k in keys)) for d in definitions))
