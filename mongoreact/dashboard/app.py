"""The dashboard's WSGI application: one HTML page and a small JSON API.

Mount it in Django or Flask (any WSGI host), or serve it with ``mongoreact dashboard``.
Every request is checked before anything is read (``security``): its host must be an
allowed one, then ``auth`` names the user and their role (viewer or operator); actions
(POST) must come from the dashboard's own page and an operator, name an explicit scope,
and are written to the audit log. Browser input is validated: task names must be known,
statuses and types are checked, ids are matched by equality, and a source filter is
parsed as Extended JSON and refused if it holds an operator that runs code on the
server; a bad request gets 400 and a message. ``redaction`` keeps chosen watched fields
and error texts off the page. The page uses relative URLs under a ``<base>`` naming the
mount point (``SCRIPT_NAME``), so it works under any prefix.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, quote

from bson import json_util
from pymongo.errors import OperationFailure

from ..config.durations import DurationLike, parse_duration
from ..errors import ConfigError
from ..management import check_doc_id, parse_extended_json
from ..records import COMPLETED, FAILED, STATUSES
from .redaction import Redaction
from .security import (
    SECURITY_HEADERS,
    Auth,
    DashboardUser,
    Refused,
    check_host,
    check_same_origin,
    identify,
    normalize_hosts,
)

logger = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
MAX_BODY: Final = 1 << 20
# Pages are read up to skip + limit records per tasks collection: bounded.
MAX_SKIP: Final = 10_000
JSON_OPTIONS: Final = json_util.RELAXED_JSON_OPTIONS
# Server errors that mean the query itself was bad: BadValue, FailedToParse, TypeMismatch,
# an unknown operator, a bad $regex (MongoDB's codes; the message is returned as is).
_BAD_QUERY_CODES: Final = frozenset({2, 9, 14, 51091, 51108})


class Engine(Protocol):
    """What the dashboard asks of the instance it shows (``ReactiveTasks``): declared
    here, so the dashboard never imports the layer that builds it. The methods that take
    the query filters as keyword arguments (``task=``, ``status=``, ...) are typed loosely.
    """

    @property
    def get_tasks(self) -> Callable[..., list[dict[str, Any]]]: ...
    @property
    def count_tasks(self) -> Callable[..., int]: ...
    @property
    def retry_tasks(self) -> Callable[..., Any]: ...
    @property
    def discard_failed_tasks(self) -> Callable[..., int]: ...

    def acting_as(self, actor: str, *, role: str = ..., via: str = ...) -> Any: ...
    def overview(self) -> dict[str, Any]: ...
    def get_task(self, task: str, doc_id: Any) -> dict[str, Any] | None: ...
    def cron_tasks(self) -> list[dict[str, Any]]: ...
    def audit_log(self, limit: int = ...) -> list[dict[str, Any]]: ...
    def pause_task(self, task: str, duration: DurationLike) -> None: ...
    def resume_task(self, task: str) -> None: ...
    def run_cron_task(self, name: str, *, wait: bool = ..., timeout: float = ...) -> None: ...
    def defer_task(self, task: str, doc_id: Any, delay: DurationLike) -> int: ...


class DashboardApp:
    """WSGI app showing and steering one cluster's tasks."""

    def __init__(
        self,
        engine: Engine,
        *,
        read_only: bool = False,
        auth: Auth | None = None,
        allowed_hosts: Iterable[str] | None = None,
        redaction: Redaction | None = None,
    ) -> None:
        if auth is not None and not callable(auth):
            raise ConfigError("auth", auth, "expected a callable taking the WSGI environ")
        if redaction is not None and not isinstance(redaction, Redaction):
            raise ConfigError("redaction", redaction, "expected a Redaction")
        self._engine = engine
        self._read_only = read_only
        self._auth = auth
        self._allowed_hosts = normalize_hosts(allowed_hosts)
        self._redaction = redaction or Redaction()
        self._routes: dict[tuple[str, str], Callable[[Environ], Any]] = {
            ("GET", "/api/overview"): self._overview,
            ("GET", "/api/tasks"): self._tasks,
            ("GET", "/api/task"): self._task,
            ("GET", "/api/cron"): self._cron,
            ("GET", "/api/audit"): self._audit,
        }
        self._actions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "/api/retry": self._retry,
            "/api/discard": self._discard,
            "/api/defer": self._defer,
            "/api/pause": self._pause,
            "/api/resume": self._resume,
            "/api/cron/run": self._run_cron,
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        try:
            hosts = check_host(environ, self._allowed_hosts)
            user = environ["mongoreact.user"] = identify(
                environ, self._auth, read_only=self._read_only
            )
            if method == "GET" and path in ("/", "/index.html"):
                return _respond(
                    start_response, "200 OK", _page(environ), "text/html; charset=utf-8"
                )
            if method == "POST" and path in self._actions:
                check_same_origin(environ, hosts)
                if user.role != "operator":
                    raise Refused("403 Forbidden", f"{user.name} is a viewer: actions refused")
                body = _body(environ)
                # The engine audits each change it makes, as this user's.
                with self._engine.acting_as(user.name, role=user.role, via="dashboard"):
                    return _json(start_response, "200 OK", self._actions[path](body))
            route = self._routes.get((method, path))
            if route is None:
                raise Refused("404 Not Found", f"no {method} {path}")
            return _json(start_response, "200 OK", route(environ))
        except Refused as error:
            return _json(start_response, error.status, {"error": str(error)}, error.headers)
        except ConfigError as error:
            return _json(start_response, "400 Bad Request", {"error": str(error)})
        except OperationFailure as error:
            if error.code in _BAD_QUERY_CODES:  # an unknown operator, a bad regex...
                message = (error.details or {}).get("errmsg") or str(error)
                return _json(start_response, "400 Bad Request", {"error": str(message)})
            logger.exception("dashboard request %s %s failed", method, path)
            return _json(start_response, "500 Internal Server Error", {"error": "server error"})
        except Exception:
            logger.exception("dashboard request %s %s failed", method, path)
            return _json(start_response, "500 Internal Server Error", {"error": "server error"})

    # Handlers.

    def _overview(self, environ: Environ) -> dict[str, Any]:
        user: DashboardUser = environ["mongoreact.user"]
        overview = self._engine.overview()
        return {"readOnly": user.role != "operator", "user": user.name, **overview}

    def _tasks(self, environ: Environ) -> dict[str, Any]:
        query = _query(environ)
        filters = _filters(query)
        limit = _int(query.get("limit", "25"), "limit", 1, 500)
        skip = _int(query.get("skip", "0"), "skip", 0, MAX_SKIP)
        sort = None
        if query.get("sort"):
            field, _, order = query["sort"].partition(":")
            sort = [(field, -1 if order == "desc" else 1)]
        self._redaction.check_filters(filters)
        items = self._engine.get_tasks(**filters, limit=limit, skip=skip, sort=sort)
        for item in items:
            item.pop("lastObservedValues", None)  # can be a whole document: on demand only
            self._redaction.record(item)
        return {"items": items, "total": self._engine.count_tasks(**filters)}

    def _task(self, environ: Environ) -> dict[str, Any]:
        query = _query(environ)
        record = self._engine.get_task(_required(query, "task"), _doc_id(query))
        if record is None:
            raise Refused("404 Not Found", "no such task record")
        return self._redaction.record(record)

    def _cron(self, environ: Environ) -> dict[str, Any]:
        return {"items": [self._redaction.record(c) for c in self._engine.cron_tasks()]}

    def _audit(self, environ: Environ) -> dict[str, Any]:
        limit = _int(_query(environ).get("limit", "50"), "limit", 1, 500)
        return {"items": [self._redaction.audit(e) for e in self._engine.audit_log(limit)]}

    def _retry(self, body: dict[str, Any]) -> dict[str, Any]:
        """Retry the records picked (``task`` + ``docIds``) or matching ``filter``
        (``{"all": true}`` for every task's). A filter without a status never re-queues
        ``completed`` records unless ``includeCompleted``; ``dryRun`` only counts."""
        selection = _selection(body, include_completed=_flag(body, "includeCompleted"))
        self._redaction.check_filters(selection)
        if _flag(body, "dryRun"):
            return {"matched": self._engine.count_tasks(**selection)}
        modified = self._engine.retry_tasks(**selection).modified_count
        return {"modified": modified}

    def _discard(self, body: dict[str, Any]) -> dict[str, Any]:
        """Delete the picked or matching records that are ``failed`` (``dryRun``: count)."""
        selection = _selection(body, include_completed=True)
        self._redaction.check_filters(selection)
        if selection.get("status") and FAILED not in selection["status"]:
            # Discarding deletes failed records only: a filter on other statuses
            # matches nothing to discard (it must not widen to every failed record).
            raise ConfigError("status", selection["status"], "discard deletes failed records")
        selection["status"] = [FAILED]
        if _flag(body, "dryRun"):
            return {"matched": self._engine.count_tasks(**selection)}
        deleted = self._engine.discard_failed_tasks(**selection)
        return {"modified": deleted}

    def _pause(self, body: dict[str, Any]) -> dict[str, Any]:
        task, delay = _required(body, "task"), parse_duration(body.get("delay"), "delay")
        self._engine.pause_task(task, delay)
        return {"modified": 1}

    def _resume(self, body: dict[str, Any]) -> dict[str, Any]:
        task = _required(body, "task")
        self._engine.resume_task(task)
        return {"modified": 1}

    def _run_cron(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _required(body, "name")
        self._engine.run_cron_task(name, wait=False)
        return {"modified": 1}

    def _defer(self, body: dict[str, Any]) -> dict[str, Any]:
        task, delay = _required(body, "task"), parse_duration(body.get("delay"), "delay")
        if "docId" not in body:
            raise ConfigError("docId", None, "required")
        doc_id = check_doc_id(body["docId"], "docId")
        modified = self._engine.defer_task(task, doc_id, delay)
        return {"modified": modified}


def _page(environ: Environ) -> bytes:
    """The page, with a ``<base>`` naming where the dashboard is mounted."""
    page = resources.files(__package__).joinpath("index.html").read_text("utf-8")
    mount = quote(environ.get("SCRIPT_NAME", "").rstrip("/"), safe="/")
    return page.replace("<head>", f'<head>\n<base href="{html.escape(mount)}/">', 1).encode()


def _selection(body: dict[str, Any], *, include_completed: bool) -> dict[str, Any]:
    """The management filters of an action: the records picked (``task`` and
    ``docIds``), those matching ``filter`` (a task, statuses, an error or a source
    filter), or every task's with ``"all": true`` - without ``completed`` ones unless
    the filter names that status or ``include_completed``. An action without a scope
    is refused: an empty body must not re-queue everything."""
    if "docIds" in body:
        ids = body["docIds"]
        if not isinstance(ids, list) or not ids:
            raise ConfigError("docIds", ids, "expected a non-empty list")
        checked = [check_doc_id(one, "docIds") for one in ids]
        return {"task": _required(body, "task"), "source_doc_filter": {"_id": {"$in": checked}}}
    raw = body.get("filter", {})
    if not isinstance(raw, dict):
        raise ConfigError("filter", raw, "expected an object (task, status, error, sourceFilter)")
    if "task" in body and "task" not in raw:
        raw = {**raw, "task": body["task"]}
    selection = _filters(raw)
    everything = _flag(body, "all")
    if not everything and not any(selection.values()):
        raise ConfigError(
            "scope", body, 'name a task, docIds or a filter (or "all": true for every record)'
        )
    if not selection["status"] and not include_completed:
        selection["status"] = [status for status in STATUSES if status != COMPLETED]
    return selection


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(name, value, "expected true or false")
    return value


def _filters(query: dict[str, Any]) -> dict[str, Any]:
    """Management filters from browser input, validated (``ConfigError``: 400)."""
    task = query.get("task") or None
    if task is not None and not isinstance(task, str):
        raise ConfigError("task", task, "expected a task name")
    statuses = query.get("status") or None
    if isinstance(statuses, str):
        statuses = [s for s in statuses.split(",") if s]
    if statuses is not None and (
        not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses)
    ):
        raise ConfigError("status", statuses, f"expected statuses among {', '.join(STATUSES)}")
    error = query.get("error") or None
    if error is not None and not isinstance(error, str):
        raise ConfigError("error", error, "expected text")
    if error is not None and query.get("errorRegex") in ("1", True):
        try:
            error = re.compile(error)
        except re.error as problem:
            raise ConfigError("error", error, f"not a regular expression: {problem}") from None
    source = query.get("sourceFilter") or None
    if isinstance(source, str):
        source = parse_extended_json(source, "sourceFilter")
    if source is not None and not isinstance(source, dict):
        raise ConfigError("sourceFilter", source, "expected a query object")
    return {"task": task, "status": statuses, "error": error, "source_doc_filter": source}


def _query(environ: Environ) -> dict[str, str]:
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _body(environ: Environ) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused("400 Bad Request", "bad Content-Length") from None
    if length < 0:  # would read until the client closes, holding a thread
        raise Refused("400 Bad Request", "bad Content-Length")
    if length > MAX_BODY:
        raise Refused("413 Payload Too Large", "request body over 1 MiB")
    raw = environ["wsgi.input"].read(length) if length else b"{}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise Refused("400 Bad Request", f"body is not UTF-8: {problem}") from None
    body = parse_extended_json(text, "body")
    if not isinstance(body, dict):
        raise Refused("400 Bad Request", "body must be a JSON object")
    return body


def _required(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "required")
    return value


def _doc_id(query: dict[str, str]) -> Any:
    # Extended JSON: "abc", 42, {"$oid": "..."}
    return check_doc_id(parse_extended_json(_required(query, "docId"), "docId"), "docId")


def _int(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, "expected an integer") from None
    if not low <= value <= high:
        raise ConfigError(name, value, f"expected {low}..{high}")
    return value


def _json(
    start_response: StartResponse,
    status: str,
    payload: Any,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json_util.dumps(payload, json_options=JSON_OPTIONS).encode()
    return _respond(start_response, status, body, "application/json", headers)


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    kind: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", kind), ("Content-Length", str(len(body))), *SECURITY_HEADERS]
        + (headers or []),
    )
    return [body]
