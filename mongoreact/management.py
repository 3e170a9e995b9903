"""The management API: find, count, retry and defer task records, the dashboard's
overview and the cron tasks' listing and run requests, from any process.

Task names are resolved through the definitions every instance publishes, so an
operator's script (or the CLI) needs no registered tasks. A ``source_doc_filter`` is a
query on the *source* documents; their ``_id``s are resolved in batches and never all
held at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import attrs
from bson import Regex, Timestamp, json_util
from bson.errors import BSONError

from .batches import batched
from .clock import as_utc
from .cluster.specs import definition_from_spec, is_reconciled
from .config.definition import tasks_collection_of
from .config.triggers import check_no_server_code
from .errors import ConfigError
from .records import STATUSES, TaskQueue
from .store.cron import CronStore
from .store.globals import GlobalsStore
from .store.tasks import TaskStore

Document = dict[str, Any]
S = TypeVar("S")
R = TypeVar("R")
P = ParamSpec("P")

DEFAULT_SORT: Final = (("nextRunAt", 1), ("_id", 1))
MAX_LIMIT: Final = 1000
ID_BATCH: Final = 1000
SORTABLE: Final = frozenset(
    {"_id", "task", "sourceDocId", "status", "attempts", "createdAt", "updatedAt", "nextRunAt",
     "dueAt", "startedAt", "completedAt", "lastFinalizedAt", "firstErrorAt"}
)  # fmt: skip


@attrs.frozen
class RetryResult:
    """What ``retry_tasks`` changed."""

    matched_count: int
    modified_count: int


def _task_name(_: object, __: object, task: Any) -> None:
    if task is not None and (not isinstance(task, str) or not task):
        raise ConfigError("task", task, "expected a task name")


def _statuses(status: object) -> tuple[str, ...]:
    if status is None:
        return ()
    if isinstance(status, str):
        statuses: tuple[str, ...] = (status,)
    elif isinstance(status, Iterable):
        statuses = tuple(status)
    else:
        raise ConfigError("status", status, "expected a status or a list of statuses")
    for one in statuses:
        if one not in STATUSES:
            raise ConfigError("status", one, f"expected one of {', '.join(STATUSES)}")
    return statuses


def _error(_: object, __: object, error: Any) -> None:
    if error is not None and not isinstance(error, (str, re.Pattern)):
        raise ConfigError("error", error, "expected a substring or a compiled regex")


def _source_doc_filter(value: object) -> Document | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError("source_doc_filter", value, "expected a query")
    check_no_server_code(value, "source_doc_filter")
    return dict(value)


@attrs.frozen(kw_only=True)
class TaskQuery:
    """Filters shared by ``get_tasks``, ``count_tasks``, ``retry_tasks`` and
    ``discard_failed_tasks``; each field checks itself (``ConfigError`` names it)."""

    task: str | None = attrs.field(default=None, validator=_task_name)
    statuses: tuple[str, ...] = attrs.field(default=(), converter=_statuses)
    error: str | re.Pattern[str] | None = attrs.field(default=None, validator=_error)
    source_doc_filter: Document | None = attrs.field(default=None, converter=_source_doc_filter)

    @classmethod
    def build(
        cls,
        task: str | None = None,
        status: str | Sequence[str] | None = None,
        source_doc_filter: Mapping[str, Any] | None = None,
        error: str | re.Pattern[str] | None = None,
    ) -> TaskQuery:
        """The query from the management API's keyword arguments (``status`` is one
        status or several): the one declaration of those filters, which ``filtered``
        gives every method taking a ``TaskQuery``."""
        return cls(task=task, statuses=status, error=error, source_doc_filter=source_doc_filter)

    def record_filter(self, task: str) -> Document:
        """The part of the query on the task records themselves."""
        query: Document = {"task": task}
        if self.statuses:
            query["status"] = {"$in": list(self.statuses)}
        if isinstance(self.error, re.Pattern):
            query["lastError"] = {"$regex": self.error.pattern}
            if self.error.flags & re.IGNORECASE:
                query["lastError"]["$options"] = "i"
        elif self.error is not None:
            # A substring: escaped, so "(" or "." in an error message match literally.
            query["lastError"] = {"$regex": re.escape(self.error)}
        return query


def _with_filters_of(
    build: Callable[P, TaskQuery],
) -> Callable[[Callable[[S, TaskQuery], R]], Callable[Concatenate[S, P], R]]:
    def decorate(method: Callable[[S, TaskQuery], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return method(self, build(*args, **kwargs))

        own = inspect.signature(method)
        first = next(iter(own.parameters.values()))
        call.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[first, *inspect.signature(build).parameters.values()]
        )
        return call

    return decorate


#: Decorator: ``method(self, query)`` becomes ``method(self, task=None, status=None,
#: source_doc_filter=None, error=None)``, the filters declared once, on ``TaskQuery.build``.
filtered = _with_filters_of(TaskQuery.build)


def parse_extended_json(text: str, option: str) -> Any:
    """``text`` as MongoDB Extended JSON (``{"$oid": ...}``, ``{"$date": ...}``);
    ``ConfigError`` for anything it cannot be, never another exception."""
    try:
        return json_util.loads(text)
    except (ValueError, TypeError, ArithmeticError, RecursionError, BSONError) as problem:
        raise ConfigError(option, text, f"not Extended JSON: {problem}") from None


def check_doc_id(value: object, option: str = "doc_id") -> Any:
    """``value`` if it can be a document's ``_id``; ``ConfigError`` otherwise. An id
    from outside (the dashboard, the CLI, an operator's script) is matched by
    equality, and refused when it is shaped like a query instead: an array or a
    regular expression (never an ``_id`` in MongoDB), or a document with ``$`` keys
    such as ``{"$gt": ""}``, which would otherwise pick an arbitrary record."""
    if isinstance(value, (list, tuple, re.Pattern, Regex)):
        raise ConfigError(option, value, "not a document id (an array or a regex)")
    if isinstance(value, Mapping):
        if any(isinstance(key, str) and key.startswith("$") for key in value):
            raise ConfigError(option, value, "not a document id (an operator)")
        for item in value.values():
            if isinstance(item, Mapping):
                check_doc_id(item, option)
    return value


def parse_sort(sort: object) -> list[tuple[str, int]]:
    """A sort as ``[(field, 1 | -1), ...]`` from a list of pairs or a dict."""
    if sort is None:
        return list(DEFAULT_SORT)
    pairs = list(sort.items()) if isinstance(sort, Mapping) else sort
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ConfigError("sort", sort, "expected [(field, 1 or -1), ...] or {field: 1 or -1}")
    parsed: list[tuple[str, int]] = []
    for pair in pairs:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or pair[0] not in SORTABLE
            or pair[1] not in (1, -1)
        ):
            raise ConfigError("sort", sort, f"bad entry {pair!r}; fields: {sorted(SORTABLE)}")
        parsed.append((pair[0], pair[1]))
    return parsed


class TaskManager:
    """Read and steer task records of one database."""

    def __init__(
        self, tasks: TaskStore, globals_: GlobalsStore, cron: CronStore, local: Mapping[str, str]
    ) -> None:
        self._tasks = tasks
        self._globals = globals_
        self._cron = cron
        self._local = dict(local)  # task name -> source collection, registered here

    def collections(self, task: str | None) -> dict[str, str]:
        """Task name -> source collection for ``task`` (or every known task)."""
        known = {**self._globals.specs.task_collections(), **self._local}
        if task is None:
            return known
        if task not in known:
            raise ConfigError("task", task, "no instance has registered a task of this name")
        return {task: known[task]}

    def count(self, query: TaskQuery) -> int:
        """How many records match."""
        return sum(
            self._tasks.count_records(tasks_collection, filter_)
            for tasks_collection, filter_ in self._filters(query)
        )

    def find(
        self, query: TaskQuery, *, limit: int, skip: int, sort: list[tuple[str, int]]
    ) -> list[Document]:
        """Matching records, sorted across tasks and batches, one page of them."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigError("limit", limit, f"expected 1..{MAX_LIMIT}")
        if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
            raise ConfigError("skip", skip, "expected an integer >= 0")
        wanted = skip + limit
        pages = [
            self._tasks.find_records(tasks_collection, filter_, sort, wanted)
            for tasks_collection, filter_ in self._filters(query)
        ]
        merged = heapq.merge(*pages, key=_sort_key(sort))
        return list(merged)[skip:wanted]

    def retry(self, query: TaskQuery) -> RetryResult:
        """Run matching records again now; a running one re-runs after its run."""
        matched = modified = 0
        for tasks_collection, filter_ in self._filters(query):
            matched_here, modified_here = self._tasks.retry_records(tasks_collection, filter_)
            matched += matched_here
            modified += modified_here
        return RetryResult(matched_count=matched, modified_count=modified)

    def discard_failed(self, query: TaskQuery) -> int:
        """Delete the matching ``failed`` records; how many. A later change of their
        documents plans them again."""
        return sum(
            self._tasks.discard_failed(tasks_collection, filter_)
            for tasks_collection, filter_ in self._filters(query)
        )

    def pause(self, task: str, duration: dt.timedelta) -> None:
        """Have no instance claim ``task`` for ``duration`` (a cluster-wide throttle)."""
        self.collections(task)
        self._globals.throttles.pause(task, duration)

    def resume(self, task: str) -> int:
        """End a cluster-wide pause of ``task``."""
        self.collections(task)
        return self._globals.throttles.resume(task)

    def get(self, task: str, doc_id: Any) -> Document | None:
        """One record, with its execution history."""
        (collection,) = self.collections(task).values()
        return self._tasks.record(tasks_collection_of(collection), task, check_doc_id(doc_id))

    def defer(self, task: str, doc_id: Any, until: dt.datetime) -> int:
        """Make one waiting or failed record due only at ``until``; how many changed."""
        (collection,) = self.collections(task).values()
        return self._tasks.defer(tasks_collection_of(collection), task, check_doc_id(doc_id), until)

    def overview(self, now: dt.datetime, heard_since: dt.datetime) -> Document:
        """Counts per task and status, lag and cluster-wide pause, the leader, and the
        instances heard from since ``heard_since`` with what they do, and the cluster's
        runs per minute over the last hour."""
        known = self.collections(None)
        queues = {name: TaskQueue(collection=collection) for name, collection in known.items()}
        queues.update(self._tasks.queue_summary(list(known.values()), now, all_statuses=True))
        paused = self._globals.throttles.pauses()
        rows = [
            {"task": task, "collection": queue.collection, "counts": queue.counts,
             "lagSeconds": queue.lag or 0.0,
             "pausedUntil": paused[task] if task in paused and paused[task] > now else None}
            for task, queue in queues.items()
        ]  # fmt: skip
        instances = self._globals.presence.instances(heard_since)
        lease = self._globals.lease.document()
        live = lease.get("expiresAt") is not None and as_utc(lease["expiresAt"]) > now
        state = self._globals.position.document()
        return {
            "tasks": sorted(rows, key=lambda row: row["task"]),
            "leader": {"instanceId": lease.get("instanceId") if live else None,
                       "epoch": lease.get("epoch"), "expiresAt": lease.get("expiresAt")},
            "instances": [instance["instanceId"] for instance in instances],
            "instanceDetails": instances,
            "perMinute": _per_minute(instances),
            "streamPositionAt": state.get("streamPositionAt"),
            "reconciledAt": state.get("reconciledAt"),
            "lastCleanupAt": state.get("lastCleanupAt"),
        }  # fmt: skip

    def planned_through(self) -> Timestamp | None:
        """The cluster time before which every change has been planned, once the tasks
        registered here (or, with none, every known task) have been reconciled too
        (their existing documents planned); else ``None``."""
        state = self._globals.position.document()
        position = state.get("streamTime")
        done = set(state.get("reconciled") or [])
        tasks = set(self._local) or set(self.collections(None))
        # Reconciled as the cluster defines each task now (its published definition).
        published = {
            spec.get("task"): spec for spec in self._globals.specs.load(dt.datetime(1970, 1, 1))
        }
        if not isinstance(position, Timestamp) or not all(
            task in published and is_reconciled(definition_from_spec(published[task]), done)
            for task in tasks
        ):
            return None
        return position

    def cron_tasks(self) -> list[Document]:
        """Every cron task's schedule, lease and recent runs (any instance's)."""
        return self._cron.all()

    def request_cron_run(self, name: str) -> dt.datetime:
        """Ask for a run of cron task ``name`` now; the server time of the request."""
        requested = self._cron.request_run(name)
        if requested is None:
            raise ConfigError("name", name, "no cron task of this name has been started")
        return requested

    def cron_run_finished(self, name: str, since: dt.datetime) -> bool:
        """Whether a run of ``name`` started at or after ``since`` has finished."""
        last = self._cron.last_run(name)
        return bool(
            last and last.get("finishedAt") is not None and as_utc(last["startedAt"]) >= since
        )

    def _filters(self, query: TaskQuery) -> Iterator[tuple[str, Document]]:
        """(tasks collection, records filter) pairs covering ``query``."""
        for task, collection in self.collections(query.task).items():
            tasks_collection = tasks_collection_of(collection)
            base = query.record_filter(task)
            if query.source_doc_filter is None:
                yield tasks_collection, base
                continue
            for ids in self._source_ids(collection, query.source_doc_filter):
                yield tasks_collection, {**base, "sourceDocId": {"$in": ids}}

    def _source_ids(self, collection: str, source_filter: Document) -> Iterator[list[Any]]:
        return batched(self._tasks.source_ids(collection, source_filter, ID_BATCH), ID_BATCH)


def _sort_key(sort: list[tuple[str, int]]) -> Any:
    """Order records like the server's sort, well enough to merge pages: missing and
    null first, values of different types by type name."""

    def compare(a: Document, b: Document) -> int:
        for field, direction in sort:
            order = _compare(a.get(field), b.get(field))
            if order:
                return order * direction
        return 0

    return functools.cmp_to_key(compare)


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        return _compare(type(a).__name__, type(b).__name__)


def _per_minute(instances: list[Document]) -> list[Document]:
    """The instances' runs per minute, summed, oldest first."""
    summed: dict[int, list[int]] = {}
    for instance in instances:
        for entry in (instance.get("facts") or {}).get("perMinute") or []:
            counts = summed.setdefault(int(entry["minute"]), [0, 0])
            counts[0] += int(entry.get("finished", 0))
            counts[1] += int(entry.get("failed", 0))
    return [
        {"minute": minute, "finished": finished, "failed": failed}
        for minute, (finished, failed) in sorted(summed.items())
    ]
