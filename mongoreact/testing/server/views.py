"""Read-only views (``create`` with ``viewOn`` and ``pipeline``), as MongoDB has them.

mongoeco 4.11.0 records a view's options but creates an ordinary empty collection. The
wire layer keeps the views here and answers a read of one as an aggregation of the
collection underneath, the view's pipeline first (views on views resolve to one
pipeline); writes and index commands on a view fail with CommandNotSupportedOnView (166).
"""

from __future__ import annotations

from typing import Any, Final

from . import errors
from .errors import CommandError

COMMAND_NOT_SUPPORTED_ON_VIEW: Final = 166
# Read commands answered through the view's pipeline; everything else naming a view
# but these and drop is refused.
READS: Final = frozenset({"find", "aggregate", "count", "distinct"})
_PASSED: Final = frozenset({"drop", "listCollections"})
_MAX_DEPTH: Final = 20  # MongoDB's limit on views defined on views

Pipeline = list[dict[str, Any]]


class Views:
    """The views of every database, by name."""

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], tuple[str, Pipeline]] = {}

    def define(self, db: str, name: str, on: Any, pipeline: Any) -> None:
        if not isinstance(on, str) or not on:
            raise CommandError(errors.BAD_VALUE, "'viewOn' must be a collection name")
        if pipeline is None:
            pipeline = []
        if not isinstance(pipeline, list) or not all(isinstance(s, dict) for s in pipeline):
            raise CommandError(errors.BAD_VALUE, "a view's 'pipeline' must be an array of stages")
        self._views[(db, name)] = (on, list(pipeline))
        self.resolve(db, name)  # a cycle fails here (the caller then drops the view)

    def forget(self, db: str, name: str | None = None) -> None:
        """Forget one view, or every view of ``db``."""
        for key in [k for k in self._views if k[0] == db and name in (None, k[1])]:
            del self._views[key]

    def is_view(self, db: str, name: Any) -> bool:
        return isinstance(name, str) and (db, name) in self._views

    def resolve(self, db: str, name: str) -> tuple[str, Pipeline]:
        """The collection a view reads and the whole pipeline it applies."""
        pipeline: Pipeline = []
        for _ in range(_MAX_DEPTH):
            view = self._views.get((db, name))
            if view is None:
                return name, pipeline
            name, stages = view
            pipeline = [*stages, *pipeline]
        raise CommandError(errors.BAD_VALUE, f"view {db}.{name} is defined on itself or too deep")

    def listed(self, db: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A ``listCollections`` entry as MongoDB reports a view."""
        if (db, entry.get("name")) not in self._views:
            return entry
        listed = {k: v for k, v in entry.items() if k != "idIndex"}
        listed["type"] = "view"
        listed["info"] = {"readOnly": True}
        return listed


def refused(name: str, db: str, view: str) -> CommandError:
    return CommandError(
        COMMAND_NOT_SUPPORTED_ON_VIEW, f"Namespace {db}.{view} is a view, not a collection"
    )


def passes(name: str) -> bool:
    """Whether a command naming a view goes to mongoeco unchanged."""
    return name in _PASSED


def as_aggregate(name: str, body: dict[str, Any], source: str, pipeline: Pipeline) -> Pipeline:
    """The aggregation on ``source`` that answers the read command ``body``."""
    if name == "aggregate":
        return [*pipeline, *body.get("pipeline", [])]
    stages = list(pipeline)
    query = body.get("filter" if name == "find" else "query")
    if query:
        stages.append({"$match": query})
    if name == "find" and body.get("sort"):
        stages.append({"$sort": body["sort"]})
    if body.get("skip"):
        stages.append({"$skip": body["skip"]})
    limit = body.get("limit")
    if limit:
        stages.append({"$limit": abs(limit)})
    if name == "find" and body.get("projection"):
        stages.append({"$project": body["projection"]})
    if name == "count":
        stages.append({"$count": "n"})
    if name == "distinct":
        stages += [
            {"$project": {"_id": 0, "v": f"${body.get('key')}"}},
            {"$unwind": "$v"},
            {"$group": {"_id": "$v"}},
        ]
    return stages
