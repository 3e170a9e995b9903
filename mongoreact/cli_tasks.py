"""``mongoreact tasks list|count|retry|show``: the management API on the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
from typing import Any, Final

from bson import json_util
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from .errors import ConfigError
from .reactive_tasks import ReactiveTasks
from .records import STATUSES
from .store.server import ping

URI_VARIABLE: Final = "MONGOREACT_URI"
EXIT_BAD_INPUT: Final = 2
EXIT_UNREACHABLE: Final = 3
CONNECT_TIMEOUT_MS: Final = 5000


class CommandError(Exception):
    """A message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def redact(uri: str) -> str:
    """``uri`` without its password (safe to print or log)."""
    return re.sub(r"(?<=://)([^:/@]+):[^@]*@", r"\1:***@", uri)


def unreachable(uri: str | None, reason: str = "") -> CommandError:
    """The error of a command that cannot reach the server at ``uri`` (``None``: a
    client the application built)."""
    target = redact(uri) if uri else "the given client"
    return CommandError(
        f"cannot reach MongoDB at {target}" + (f": {reason}" if reason else ""), EXIT_UNREACHABLE
    )


def add_commands(commands: Any) -> None:
    """Add ``tasks list|count|retry|show`` to the top-level parser."""
    tasks = commands.add_parser("tasks", help="list, count, retry or show task records")
    actions = tasks.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print one record with its error and history")
    _add_connection(show)
    show.add_argument("--task", required=True, help="task name")
    show.add_argument(
        "--doc-id", required=True, help="the source document's _id, as JSON: '\"o-1\"', 42"
    )
    show.set_defaults(run=run)
    for action, description in (
        ("list", "print matching task records"),
        ("count", "print how many task records match"),
        ("retry", "run matching tasks again now"),
    ):
        parser = actions.add_parser(action, help=description)
        _add_connection(parser)
        parser.add_argument("--task", help="task name")
        parser.add_argument("--status", action="append", choices=STATUSES, help="repeatable")
        parser.add_argument("--error", help="substring of the last error")
        parser.add_argument("--error-regex", help="regular expression on the last error")
        parser.add_argument("--source-filter", help="JSON query on the source documents")
        if action == "list":
            parser.add_argument("--limit", type=int, default=50)
            parser.add_argument("--skip", type=int, default=0)
            parser.add_argument("--sort", help="field, field:asc or field:desc (default nextRunAt)")
            parser.add_argument("--json", action="store_true", help="one JSON record a line")
        if action == "retry":
            parser.add_argument(
                "--dry-run", action="store_true", help="only say how many records would run again"
            )
        parser.set_defaults(run=run)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help=f"MongoDB URI (default: ${URI_VARIABLE})")
    parser.add_argument("--database", help="database (default: the URI's)")
    parser.add_argument("--globals-collection", default="_mongoreact_globals")


def run(args: argparse.Namespace) -> int:
    """Run one ``tasks`` action; messages, not tracebacks, on failure."""
    uri = args.uri or os.environ.get(URI_VARIABLE)
    if not uri:
        raise CommandError(f"give --uri or set {URI_VARIABLE}")
    filters = {} if args.action == "show" else _filters(args)
    sort = _sort(args.sort) if args.action == "list" else None
    try:
        database = args.database or parse_uri(uri).get("database")
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS, tz_aware=True
        )
    except (ConfigurationError, ValueError) as error:
        raise CommandError(f"bad URI {redact(uri)}: {error}") from None
    if not database:
        client.close()
        raise CommandError("name the database with --database or in the URI")
    try:
        engine = ReactiveTasks(
            client=client, database=database, globals_collection=args.globals_collection
        )
        return _act(engine, args, filters, sort)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except ServerSelectionTimeoutError:
        raise unreachable(uri) from None
    except PyMongoError as error:
        raise CommandError(f"MongoDB error: {error}", EXIT_UNREACHABLE) from None
    finally:
        client.close()


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    if args.error and args.error_regex:
        raise CommandError("give --error or --error-regex, not both")
    error: Any = args.error
    if args.error_regex:
        try:
            error = re.compile(args.error_regex)
        except re.error as problem:
            raise CommandError(f"--error-regex: {problem}") from None
    source = None
    if args.source_filter:
        try:
            source = json_util.loads(args.source_filter)
        except ValueError as problem:
            raise CommandError(f"--source-filter is not JSON: {problem}") from None
    return {"task": args.task, "status": args.status, "error": error, "source_doc_filter": source}


def _sort(raw: str | None) -> list[tuple[str, int]] | None:
    if not raw:
        return None
    field, _, order = raw.partition(":")
    orders = {"": 1, "asc": 1, "desc": -1}
    if order not in orders:
        raise CommandError(f"--sort={raw}: the order is asc or desc, as in {field}:desc")
    return [(field, orders[order])]


def _act(
    engine: ReactiveTasks,
    args: argparse.Namespace,
    filters: dict[str, Any],
    sort: list[tuple[str, int]] | None,
) -> int:
    if args.action == "count":
        print(engine.count_tasks(**filters))
    elif args.action == "retry" and args.dry_run:
        print(f"would retry {engine.count_tasks(**filters)} task(s) (dry run: nothing changed)")
    elif args.action == "retry":
        result = engine.retry_tasks(**filters)
        print(f"retried {result.modified_count} task(s)")
    elif args.action == "show":
        return _show(engine, args.task, _json_value(args.doc_id, "--doc-id"))
    else:
        records = engine.get_tasks(**filters, limit=args.limit, skip=args.skip, sort=sort)
        if not args.json:
            print(HEADER)
        for record in records:
            print(_json(record) if args.json else _line(record))
    return 0


def _show(engine: ReactiveTasks, task: str, doc_id: Any) -> int:
    record = engine.get_task(task, doc_id)
    if record is None:
        raise CommandError(f"no record of task {task!r} for {json.dumps(doc_id, default=str)}", 1)
    history = record.pop("executionHistory", None) or []
    traceback = record.pop("lastErrorTraceback", None)
    print(json_util.dumps(record, json_options=json_util.RELAXED_JSON_OPTIONS, indent=2))
    if traceback:
        print("\nlast error traceback:\n" + traceback.rstrip())
    if history:
        print(f"\nexecution history ({len(history)}, oldest first):")
        for run in history:
            print("  " + _run_line(run))
    return 0


def _run_line(run: dict[str, Any]) -> str:
    started = run.get("at")
    return "  ".join(
        part
        for part in (
            started.isoformat(timespec="seconds") if isinstance(started, dt.datetime) else "-",
            f"{run.get('status', '')!s:<10}",
            f"attempt={run.get('attempt', '-')}",
            f"{run.get('durationMs', '-')} ms",
            str(run.get("instanceId") or ""),
            (run.get("error") or "").replace("\n", " ")[:120],
        )
        if part
    )


def _json_value(raw: str, option: str) -> Any:
    try:
        return json_util.loads(raw)
    except ValueError:
        raise CommandError(f"{option} {raw}: expected JSON, such as '\"o-1\"' or 42") from None


def _json(record: dict[str, Any]) -> str:
    return json_util.dumps(record, json_options=json_util.RELAXED_JSON_OPTIONS)


HEADER: Final = "  ".join(
    [f"{'TASK':<24}", f"{'DOCUMENT':<28}", f"{'STATUS':<16}", f"{'ATTEMPTS':<12}",
     f"{'NEXT RUN (UTC)':<30}", "LAST ERROR"]
)  # fmt: skip


def _line(record: dict[str, Any]) -> str:
    error = (record.get("lastError") or "").replace("\n", " ")
    next_run = record.get("nextRunAt")
    return "  ".join(
        [
            f"{record.get('task', '')!s:<24}",
            f"{json.dumps(record.get('sourceDocId'), default=str):<28}",
            f"{record.get('status', ''):<16}",
            f"attempts={record.get('attempts', 0):<3}",
            f"next={next_run.isoformat(timespec='seconds') if next_run else '-':<25}",
            error[:80],
        ]
    ).rstrip()


def add_dashboard_command(commands: Any) -> None:
    """Add ``dashboard``: serve the web dashboard."""
    parser = commands.add_parser("dashboard", help="serve the web dashboard")
    parser.add_argument("--uri", help=f"MongoDB URI (default: ${URI_VARIABLE})")
    parser.add_argument("--database", help="database (default: the URI's)")
    parser.add_argument("--globals-collection", default="_mongoreact_globals")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--read-only", action="store_true", help="no retry or defer")
    parser.set_defaults(run=serve_dashboard)


def serve_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    from .monitoring.http import make_quiet_server

    uri = args.uri or os.environ.get(URI_VARIABLE)
    if not uri:
        raise CommandError(f"give --uri or set {URI_VARIABLE}")
    database = args.database or parse_uri(uri).get("database")
    if not database:
        raise CommandError("name the database with --database or in the URI")
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS, tz_aware=True
    )
    try:
        ping(client)
    except PyMongoError:
        client.close()
        raise unreachable(uri) from None
    engine = ReactiveTasks(
        client=client, database=database, globals_collection=args.globals_collection
    )
    app = engine.dashboard_app(read_only=args.read_only)
    try:
        with make_quiet_server(args.host, args.port, app) as server:
            print(f"mongoreact dashboard on http://{args.host}:{server.server_port}/", flush=True)
            server.serve_forever()
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    finally:
        client.close()
    return 0
