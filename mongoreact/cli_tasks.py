"""``mongoreact tasks list|count|retry|show``: the management API on the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
from typing import Any, Final

from bson import json_util
from pymongo import MongoClient
from pymongo.errors import (
    ConfigurationError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.uri_parser import parse_uri

from .audit import os_user
from .config.durations import parse_duration
from .config.settings import URI_VARIABLE
from .config.uri import redact_uri, secrets_of, without_secrets
from .errors import ConfigError
from .management import parse_extended_json
from .reactive_tasks import ReactiveTasks
from .records import COMPLETED, FAILED, STATUSES
from .store.server import AUTHENTICATION_FAILED, error_summary, ping

logger = logging.getLogger(__name__)


EXIT_BAD_INPUT: Final = 2
EXIT_UNREACHABLE: Final = 3
CONNECT_TIMEOUT_MS: Final = 5000


class CommandError(Exception):
    """A message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def redact(uri: str) -> str:
    """``uri`` without its password or secret options (safe to print or log)."""
    return redact_uri(uri)


def unreachable(uri: str | None, reason: str = "") -> CommandError:
    """The error of a command that cannot reach the server at ``uri`` (``None``: a
    client the application built)."""
    target = redact(uri) if uri else "the given client"
    return CommandError(
        f"cannot reach MongoDB at {target}" + (f": {reason}" if reason else ""), EXIT_UNREACHABLE
    )


def add_commands(commands: Any) -> None:
    """Add ``tasks ...``, ``cron list|run`` and ``audit`` to the top-level parser."""
    tasks = commands.add_parser("tasks", help="list, show, retry, discard, defer or pause tasks")
    actions = tasks.add_subparsers(dest="action", required=True)
    show = _action(actions, "show", "print one record with its error and history")
    _add_doc_id(show)
    for action, description in (
        ("list", "print matching task records"),
        ("count", "print how many task records match"),
        ("retry", "run matching tasks again now"),
        ("discard", "delete matching records that failed (given up on)"),
    ):
        parser = _action(actions, action, description, task_required=False)
        parser.add_argument(
            "--status", action="append", choices=[s.value for s in STATUSES], help="repeatable"
        )
        parser.add_argument("--error", help="substring of the last error")
        parser.add_argument("--error-regex", help="regular expression on the last error")
        parser.add_argument("--source-filter", help="JSON query on the source documents")
        if action == "list":
            parser.add_argument("--limit", type=int, default=50)
            parser.add_argument("--skip", type=int, default=0)
            parser.add_argument("--sort", help="field, field:asc or field:desc (default nextRunAt)")
            parser.add_argument("--json", action="store_true", help="one JSON record a line")
        if action in ("retry", "discard"):
            parser.add_argument(
                "--all", action="store_true", help="every task's records (no filter given)"
            )
            parser.add_argument(
                "--dry-run", action="store_true", help="only say how many records would change"
            )
        if action == "retry":
            parser.add_argument(
                "--include-completed", action="store_true",
                help="also run completed records again (without --status, they are left alone)",
            )  # fmt: skip
    defer = _action(actions, "defer", "make one waiting or failed record due only later")
    _add_doc_id(defer)
    defer.add_argument("--delay", required=True, help="e.g. 30m, 1h, 2d")
    pause = _action(actions, "pause", "have no instance claim a task for a while")
    pause.add_argument("--for", dest="delay", required=True, help="e.g. 30m, 1h")
    _action(actions, "resume", "end a task's pause")
    cron = commands.add_parser("cron", help="list cron tasks, or run one now")
    cron_actions = cron.add_subparsers(dest="action", required=True)
    _add_connection(cron_actions.add_parser("list", help="print every cron task"))
    run_now = cron_actions.add_parser("run", help="run a cron task now, on any instance")
    _add_connection(run_now)
    run_now.add_argument("name", help="the cron task's name")
    audit = commands.add_parser("audit", help="print the latest operator actions")
    _add_connection(audit)
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true", help="one JSON entry a line")
    for parser in (cron, audit):
        parser.set_defaults(run=run)
    audit.set_defaults(action="audit")


def _action(
    actions: Any, name: str, description: str, *, task_required: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=description)
    _add_connection(parser)
    parser.add_argument("--task", required=task_required, help="task name")
    parser.set_defaults(run=run)
    return parser


def _add_doc_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--doc-id", required=True,
        help="the source document's _id: o-1, or Extended JSON for other types: 42, "
        '\'{"$oid": "..."}\', \'"42"\' for the string',
    )  # fmt: skip


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", help=f"MongoDB URI (default: ${URI_VARIABLE})")
    parser.add_argument("--database", help="database (default: the URI's)")
    parser.add_argument("--globals-collection", default="_mongoreact_globals")


def port_number(text: str) -> int:
    """An ``argparse`` type: a TCP port, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def connection_uri(args: argparse.Namespace) -> str:
    """The URI of ``--uri`` or ``$MONGOREACT_URI``. A password on the command line is
    visible to every user of the machine (``ps``): said, once, at WARNING."""
    uri: str | None = args.uri or os.environ.get(URI_VARIABLE)
    if not uri:
        raise CommandError(f"give --uri or set {URI_VARIABLE}")
    if args.uri and secrets_of(args.uri):
        logger.warning(
            "--uri holds a secret, which every user of this machine can read in the process "
            "list; set %s instead (it is read when --uri is not given)",
            URI_VARIABLE,
        )
    return uri


def connect(uri: str, database: str | None) -> tuple[MongoClient[dict[str, Any]], str]:
    """A client for ``uri`` and the database to use, checked with a ping; a
    ``CommandError`` (never a traceback) for a bad URI, no database, or no server."""
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise CommandError(f"bad URI {redact(uri)}: expected mongodb://... or mongodb+srv://...")
    try:
        database = database or parse_uri(uri).get("database")
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS, tz_aware=True
        )
    except (ConfigurationError, ValueError, TypeError) as error:
        raise CommandError(f"bad URI {redact(uri)}: {without_secrets(str(error), uri)}") from None
    if not database:
        client.close()
        raise CommandError("name the database with --database or in the URI")
    try:
        ping(client)
    except OperationFailure as error:
        client.close()
        if error.code == AUTHENTICATION_FAILED:
            raise CommandError(
                f"MongoDB at {redact(uri)} refused the credentials (authentication failed)",
                EXIT_UNREACHABLE,
            ) from None
        raise CommandError(f"MongoDB error: {without_secrets(str(error), uri)}") from None
    except PyMongoError as error:
        client.close()
        raise unreachable(uri, error_summary(without_secrets(str(error), uri))) from None
    return client, database


def run(args: argparse.Namespace) -> int:
    """Run one ``tasks`` action; messages, not tracebacks, on failure."""
    uri = connection_uri(args)
    filters = _filters(args) if hasattr(args, "status") else {}
    sort = _sort(args.sort) if hasattr(args, "sort") else None
    if getattr(args, "all", None) is False and not any(filters.values()):
        raise CommandError(
            f"tasks {args.action} needs a scope: --task, --status, --error, --error-regex or "
            "--source-filter, or --all for every task's records"
        )
    client, database = connect(uri, args.database)
    try:
        engine = ReactiveTasks(
            client=client, database=database, globals_collection=args.globals_collection
        )
        # The engine audits each change it makes, as this OS user's, through the CLI.
        with engine.acting_as(os_user(), via="cli"):
            return _act(engine, args, filters, sort)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except ServerSelectionTimeoutError:
        raise unreachable(uri) from None
    except PyMongoError as error:
        raise CommandError(
            f"MongoDB error: {without_secrets(str(error), uri)}", EXIT_UNREACHABLE
        ) from None
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
            source = parse_extended_json(args.source_filter, "--source-filter")
        except ConfigError as error:
            raise CommandError(str(error)) from None
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
    command = getattr(args, "command", "tasks")
    if command == "audit":
        return _audit(engine, args)
    if command == "cron":
        return _cron(engine, args)
    if args.action == "count":
        print(engine.count_tasks(**filters))
    elif args.action in ("retry", "discard"):
        return _bulk(engine, args, filters)
    elif args.action == "show":
        return _show(engine, args.task, _doc_id(args.doc_id))
    elif args.action == "defer":
        doc_id, delay = _doc_id(args.doc_id), parse_duration(args.delay, "--delay")
        changed = engine.defer_task(args.task, doc_id, delay)
        print(f"deferred {changed} record(s) by {delay}")
    elif args.action == "pause":
        delay = parse_duration(args.delay, "--for")
        engine.pause_task(args.task, delay)
        print(f"paused {args.task} on every instance for {delay}")
    elif args.action == "resume":
        engine.resume_task(args.task)
        print(f"resumed {args.task}")
    else:
        records = engine.get_tasks(**filters, limit=args.limit, skip=args.skip, sort=sort)
        if not args.json:
            print(HEADER)
        for record in records:
            print(_json(record) if args.json else _line(record))
    return 0


def _bulk(engine: ReactiveTasks, args: argparse.Namespace, filters: dict[str, Any]) -> int:
    """``retry`` or ``discard`` (``run`` checked they have a scope)."""
    if args.action == "discard":
        if filters["status"] and FAILED not in filters["status"]:
            raise CommandError("tasks discard deletes failed records: --status failed, or none")
        filters = {**filters, "status": [FAILED]}
    elif not filters["status"] and not args.include_completed:
        # As the dashboard: re-running completed records repeats their effects.
        filters = {**filters, "status": [s for s in STATUSES if s != COMPLETED]}
    if args.dry_run:
        count = engine.count_tasks(**filters)
        print(f"would {args.action} {count} task(s) (dry run: nothing changed)")
        return 0
    if args.action == "retry":
        changed = engine.retry_tasks(**filters).modified_count
    else:
        changed = engine.discard_failed_tasks(**filters)
    print(f"{'retried' if args.action == 'retry' else 'discarded'} {changed} task(s)")
    return 0


def _audit(engine: ReactiveTasks, args: argparse.Namespace) -> int:
    entries = engine.audit_log(args.limit)
    for entry in entries:
        if args.json:
            print(_json(entry))
            continue
        at = entry.get("at")
        when = at.isoformat(timespec="seconds") if isinstance(at, dt.datetime) else "-"
        print(
            f"{when}  {entry.get('actor')} ({entry.get('role')}, {entry.get('via')})  "
            f"{entry.get('action')}  {entry.get('count')} record(s)  {entry.get('scope')}"
        )
    return 0


def _cron(engine: ReactiveTasks, args: argparse.Namespace) -> int:
    if args.action == "run":
        engine.run_cron_task(args.name, wait=False)
        print(f"asked {args.name} to run now; the first instance to claim it runs it")
        return 0
    for task in engine.cron_tasks():
        last = (task.get("runLog") or [{}])[0]
        print(f"{task['_id']}  {task.get('schedule')}  next {task.get('nextRunAt')}  "
              f"last {last.get('startedAt')}  {last.get('error') or ''}".rstrip())  # fmt: skip
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


def _doc_id(raw: str) -> Any:
    """``--doc-id``: Extended JSON when it parses as such (``42``, ``{"$oid": ...}``,
    ``"o-1"`` with its quotes), else the text itself, so ``--doc-id o-1`` works."""
    try:
        return parse_extended_json(raw, "--doc-id")
    except ConfigError as error:
        if raw.lstrip().startswith(("{", "[", '"')):  # meant as JSON, and broken
            raise CommandError(str(error)) from None
        return raw


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
