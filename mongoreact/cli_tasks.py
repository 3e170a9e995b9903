"""``mongoreact tasks list|count|retry``: the management API on the command line."""

from __future__ import annotations

import argparse
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


def add_commands(commands: Any) -> None:
    """Add ``tasks list|count|retry`` to the top-level parser."""
    tasks = commands.add_parser("tasks", help="list, count or retry task records")
    actions = tasks.add_subparsers(dest="action", required=True)
    for action, description in (
        ("list", "print matching task records"),
        ("count", "print how many task records match"),
        ("retry", "run matching tasks again now"),
    ):
        parser = actions.add_parser(action, help=description)
        parser.add_argument("--uri", help=f"MongoDB URI (default: ${URI_VARIABLE})")
        parser.add_argument("--database", help="database (default: the URI's)")
        parser.add_argument("--globals-collection", default="_mongoreact_globals")
        parser.add_argument("--task", help="task name")
        parser.add_argument("--status", action="append", choices=STATUSES, help="repeatable")
        parser.add_argument("--error", help="substring of the last error")
        parser.add_argument("--error-regex", help="regular expression on the last error")
        parser.add_argument("--source-filter", help="JSON query on the source documents")
        if action == "list":
            parser.add_argument("--limit", type=int, default=50)
            parser.add_argument("--skip", type=int, default=0)
            parser.add_argument("--sort", help="field or field:desc (default nextRunAt)")
            parser.add_argument("--json", action="store_true", help="one JSON record a line")
        parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run one ``tasks`` action; messages, not tracebacks, on failure."""
    uri = args.uri or os.environ.get(URI_VARIABLE)
    if not uri:
        raise CommandError(f"give --uri or set {URI_VARIABLE}")
    filters = _filters(args)
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
        return _act(engine, args, filters)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except ServerSelectionTimeoutError:
        raise CommandError(f"cannot reach MongoDB at {redact(uri)}", EXIT_UNREACHABLE) from None
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


def _act(engine: ReactiveTasks, args: argparse.Namespace, filters: dict[str, Any]) -> int:
    if args.action == "count":
        print(engine.count_tasks(**filters))
    elif args.action == "retry":
        result = engine.retry_tasks(**filters)
        print(f"retried {result.modified_count} task(s)")
    else:
        sort = None
        if args.sort:
            field, _, order = args.sort.partition(":")
            sort = [(field, -1 if order == "desc" else 1)]
        records = engine.get_tasks(**filters, limit=args.limit, skip=args.skip, sort=sort)
        for record in records:
            print(_json(record) if args.json else _line(record))
    return 0


def _json(record: dict[str, Any]) -> str:
    return json_util.dumps(record, json_options=json_util.RELAXED_JSON_OPTIONS)


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
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

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
        client.admin.command("ping")
    except PyMongoError:
        client.close()
        raise CommandError(f"cannot reach MongoDB at {redact(uri)}", EXIT_UNREACHABLE) from None
    engine = ReactiveTasks(
        client=client, database=database, globals_collection=args.globals_collection
    )
    app = engine.dashboard_app(read_only=args.read_only)
    try:
        with make_server(args.host, args.port, app, Server, QuietHandler) as server:
            print(f"mongoreact dashboard on http://{args.host}:{server.server_port}/", flush=True)
            server.serve_forever()
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    finally:
        client.close()
    return 0
