"""The dashboard's WSGI application: one HTML page and a small JSON API.

Mount it in Django or Flask (any WSGI host), or serve it with ``mongoreact dashboard``.
Browser input is validated: task names must be known, statuses are checked, a source
filter is parsed as Extended JSON and refused if it holds an operator that runs code on
the server. ``auth`` (a callable taking the WSGI environ) can refuse any request;
``read_only`` refuses the actions.

Actions (POST) are refused unless they come from the dashboard's own page: a JSON body
(a cross-site form cannot send one without a CORS preflight, which is never granted) and,
when the browser says where the request comes from (``Origin``, ``Referer``,
``Sec-Fetch-Site``), the dashboard's own origin. The page uses relative URLs under a
``<base>`` naming the mount point (``SCRIPT_NAME``), so it works under any prefix.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote, urlsplit

from bson import json_util

from ..config.durations import parse_duration
from ..errors import ConfigError
from ..records import COMPLETED, STATUSES

if TYPE_CHECKING:
    from ..reactive_tasks import ReactiveTasks

logger = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
MAX_BODY: Final = 1 << 20
JSON_OPTIONS: Final = json_util.RELAXED_JSON_OPTIONS


class HttpError(Exception):
    """An error answered with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class DashboardApp:
    """WSGI app showing and steering one cluster's tasks."""

    def __init__(
        self,
        engine: ReactiveTasks,
        *,
        read_only: bool = False,
        auth: Callable[[Environ], bool] | None = None,
    ) -> None:
        self._engine = engine
        self._read_only = read_only
        self._auth = auth
        self._routes: dict[tuple[str, str], Callable[[Environ], Any]] = {
            ("GET", "/api/overview"): self._overview,
            ("GET", "/api/tasks"): self._tasks,
            ("GET", "/api/task"): self._task,
            ("GET", "/api/cron"): self._cron,
            ("POST", "/api/retry"): self._retry,
            ("POST", "/api/discard"): self._discard,
            ("POST", "/api/defer"): self._defer,
            ("POST", "/api/pause"): self._pause,
            ("POST", "/api/resume"): self._resume,
            ("POST", "/api/cron/run"): self._run_cron,
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        try:
            if self._auth is not None and not self._auth(environ):
                raise HttpError("403 Forbidden", "not allowed")
            if method == "GET" and path in ("/", "/index.html"):
                return _respond(
                    start_response, "200 OK", _page(environ), "text/html; charset=utf-8"
                )
            route = self._routes.get((method, path))
            if route is None:
                raise HttpError("404 Not Found", f"no {method} {path}")
            if method == "POST":
                _check_same_origin(environ)
                if self._read_only:
                    raise HttpError("403 Forbidden", "the dashboard is read-only")
            return _json(start_response, "200 OK", route(environ))
        except HttpError as error:
            return _json(start_response, error.status, {"error": str(error)})
        except ConfigError as error:
            return _json(start_response, "400 Bad Request", {"error": str(error)})
        except Exception:
            logger.exception("dashboard request %s %s failed", method, path)
            return _json(start_response, "500 Internal Server Error", {"error": "server error"})

    # Handlers.

    def _overview(self, environ: Environ) -> dict[str, Any]:
        return {"readOnly": self._read_only, **self._engine.overview()}

    def _tasks(self, environ: Environ) -> dict[str, Any]:
        query = _query(environ)
        filters = _filters(query)
        limit = _int(query.get("limit", "25"), "limit", 1, 500)
        skip = _int(query.get("skip", "0"), "skip", 0, 10**9)
        sort = None
        if query.get("sort"):
            field, _, order = query["sort"].partition(":")
            sort = [(field, -1 if order == "desc" else 1)]
        items = self._engine.get_tasks(**filters, limit=limit, skip=skip, sort=sort)
        for item in items:
            item.pop("lastObservedValues", None)  # can be a whole document: on demand only
        return {"items": items, "total": self._engine.count_tasks(**filters)}

    def _task(self, environ: Environ) -> dict[str, Any]:
        query = _query(environ)
        record = self._engine.get_task(_required(query, "task"), _doc_id(query))
        if record is None:
            raise HttpError("404 Not Found", "no such task record")
        return record

    def _cron(self, environ: Environ) -> dict[str, Any]:
        return {"items": self._engine.cron_tasks()}

    def _retry(self, environ: Environ) -> dict[str, Any]:
        """Retry the records picked (``task`` + ``docIds``) or matching ``filter``.
        A filter without a status never re-queues ``completed`` records unless
        ``includeCompleted``; ``dryRun`` only counts what would run again."""
        body = _body(environ)
        selection = _selection(body, include_completed=body.get("includeCompleted") is True)
        if body.get("dryRun") is True:
            return {"matched": self._engine.count_tasks(**selection)}
        return {"modified": self._engine.retry_tasks(**selection).modified_count}

    def _discard(self, environ: Environ) -> dict[str, Any]:
        """Delete the picked or matching records that are ``failed`` (``dryRun``: count)."""
        body = _body(environ)
        selection = {**_selection(body, include_completed=True), "status": ["failed"]}
        if body.get("dryRun") is True:
            return {"matched": self._engine.count_tasks(**selection)}
        return {"modified": self._engine.discard_failed_tasks(**selection)}

    def _pause(self, environ: Environ) -> dict[str, Any]:
        body = _body(environ)
        delay = parse_duration(body.get("delay"), "delay")
        self._engine.pause_task(_required(body, "task"), delay)
        return {"modified": 1}

    def _resume(self, environ: Environ) -> dict[str, Any]:
        self._engine.resume_task(_required(_body(environ), "task"))
        return {"modified": 1}

    def _run_cron(self, environ: Environ) -> dict[str, Any]:
        self._engine.run_cron_task(_required(_body(environ), "name"), wait=False)
        return {"modified": 1}

    def _defer(self, environ: Environ) -> dict[str, Any]:
        body = _body(environ)
        delay = parse_duration(body.get("delay"), "delay")
        modified = self._engine.defer_task(_required(body, "task"), body.get("docId"), delay)
        return {"modified": modified}


def _page(environ: Environ) -> bytes:
    """The page, with a ``<base>`` naming where the dashboard is mounted."""
    page = resources.files(__package__).joinpath("index.html").read_text("utf-8")
    mount = quote(environ.get("SCRIPT_NAME", "").rstrip("/"), safe="/")
    return page.replace("<head>", f'<head>\n<base href="{html.escape(mount)}/">', 1).encode()


def _check_same_origin(environ: Environ) -> None:
    """Refuse an action another site's page could have sent (cross-site request
    forgery): it must carry JSON and, where the browser names its origin, this one."""
    kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HttpError("415 Unsupported Media Type", "actions take a JSON body")
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and site not in ("same-origin", "none"):
        raise HttpError("403 Forbidden", f"cross-site request refused ({site})")
    # Behind a proxy that rewrites Host, X-Forwarded-Host names the public one.
    hosts = {environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_HOST")} - {None, ""}
    for header in ("HTTP_ORIGIN", "HTTP_REFERER"):
        claimed = environ.get(header)
        if claimed is None:
            continue
        if urlsplit(claimed).netloc not in hosts:
            raise HttpError("403 Forbidden", "cross-origin request refused")
        return


def _selection(body: dict[str, Any], *, include_completed: bool) -> dict[str, Any]:
    """The management filters of an action: the records picked (``task`` and
    ``docIds``), or those matching ``filter`` - without ``completed`` ones unless the
    filter names that status or ``include_completed``."""
    if "docIds" in body:
        ids = body["docIds"]
        if not isinstance(ids, list) or not ids:
            raise ConfigError("docIds", ids, "expected a non-empty list")
        return {"task": _required(body, "task"), "source_doc_filter": {"_id": {"$in": ids}}}
    selection = _filters(body.get("filter") or {})
    if not selection["status"] and not include_completed:
        selection["status"] = [status for status in STATUSES if status != COMPLETED]
    return selection


def _filters(query: dict[str, Any]) -> dict[str, Any]:
    """Management filters from browser input (strings), validated."""
    statuses = query.get("status") or None
    if isinstance(statuses, str):
        statuses = [s for s in statuses.split(",") if s]
    error = query.get("error") or None
    if error is not None and query.get("errorRegex") in ("1", True):
        try:
            error = re.compile(error)
        except re.error as problem:
            raise ConfigError("error", error, f"not a regular expression: {problem}") from None
    source = query.get("sourceFilter") or None
    if isinstance(source, str):
        try:
            source = json_util.loads(source)
        except ValueError as problem:
            raise ConfigError("sourceFilter", source, f"not JSON: {problem}") from None
    return {
        "task": query.get("task") or None,
        "status": statuses,
        "error": error,
        "source_doc_filter": source,
    }


def _query(environ: Environ) -> dict[str, str]:
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _body(environ: Environ) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        raise HttpError("413 Payload Too Large", "request body over 1 MiB")
    raw = environ["wsgi.input"].read(length) if length else b"{}"
    try:
        body = json_util.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as problem:
        raise HttpError("400 Bad Request", f"body is not JSON: {problem}") from None
    if not isinstance(body, dict):
        raise HttpError("400 Bad Request", "body must be a JSON object")
    return body


def _required(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "required")
    return value


def _doc_id(query: dict[str, str]) -> Any:
    raw = _required(query, "docId")
    try:
        return json_util.loads(raw)  # Extended JSON: "abc", 42, {"$oid": "..."}
    except ValueError:
        raise ConfigError("docId", raw, "expected Extended JSON") from None


def _int(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, "expected an integer") from None
    if not low <= value <= high:
        raise ConfigError(name, value, f"expected {low}..{high}")
    return value


def _json(start_response: StartResponse, status: str, payload: Any) -> list[bytes]:
    body = json_util.dumps(payload, json_options=JSON_OPTIONS).encode()
    return _respond(start_response, status, body, "application/json")


def _respond(start_response: StartResponse, status: str, body: bytes, kind: str) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]
