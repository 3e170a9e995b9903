"""``mongoreact run MODULE[:ATTRIBUTE]``: run a worker process for the tasks a module
registers, until SIGTERM or SIGINT.

The module registers its tasks on the default instance (``mongoreact.init`` /
``mongoreact.register``), or ``ATTRIBUTE`` names a ``ReactiveTasks`` object (or a
function returning one). Options given on the command line (``--uri``,
``--concurrency``, ...) win over those the module passes. Failures to import, to
configure or to connect end the process with one line on stderr and a non-zero code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Final

from pymongo.errors import PyMongoError

from . import api
from .cli_tasks import (
    EXIT_BAD_INPUT,
    EXIT_UNREACHABLE,
    CommandError,
    port_number,
    unreachable,
)
from .config.settings import URI_VARIABLE, override_from_command_line
from .errors import ConfigError, MongoReactError, ServerUnreachableError
from .logs import json_handler
from .monitoring.http import ProbeApp, ProbeServer
from .reactive_tasks import ReactiveTasks
from .signals import run_until_signalled
from .store.server import error_summary

logger = logging.getLogger(__name__)

LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
EXIT_UNCLEAN: Final = 1  # a handler was still running when the stop timeout ran out


def add_run_command(commands: Any) -> None:
    """Add ``run`` to the top-level parser."""
    parser = commands.add_parser(
        "run",
        help="run a worker for the tasks a module registers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="MODULE[:ATTRIBUTE]", help="e.g. myapp.tasks")
    parser.add_argument("--uri", help=f"MongoDB URI (default: the module's, or ${URI_VARIABLE})")
    parser.add_argument("--database", help="database (default: the URI's)")
    parser.add_argument("--concurrency", type=int, help="worker threads (default: 5)")
    parser.add_argument("--instance-id", help="this instance's id (default: random)")
    parser.add_argument(
        "--stop-timeout", type=float, default=30.0,
        help="seconds to let running handlers finish on SIGTERM/SIGINT (default: 30)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-timeout", type=float, default=30.0,
        help="seconds to wait for MongoDB at start, with progress logged (default: 30)",
    )  # fmt: skip
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", type=str.upper)
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="json: one object a line, with task, doc_id, attempt and instance_id fields",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-port", type=port_number,
        help="serve /metrics (Prometheus) and /health on this port (0: any free port)",
    )  # fmt: skip
    parser.add_argument("--metrics-host", default="0.0.0.0", help="default: every interface")
    parser.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """Import, start, wait for a signal, stop; the exit code."""
    if args.log_format == "json":
        logging.basicConfig(level=args.log_level, handlers=[json_handler(sys.stderr)], force=True)
    else:
        logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    if args.stop_timeout < 0:
        raise CommandError(f"--stop-timeout={args.stop_timeout}: expected seconds >= 0")
    overrides = {
        name: value
        for name, value in (
            ("uri", args.uri), ("database", args.database),
            ("concurrency", args.concurrency), ("instance_id", args.instance_id),
        )
        if value is not None
    }  # fmt: skip
    uri = args.uri or os.environ.get(URI_VARIABLE)
    override_from_command_line(overrides, default_uri=uri)
    try:
        if uri is not None:
            # A module that only registers tasks (no init of its own) gets this instance.
            api.init()
        instance = _load(args.target)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    return _run_until_signalled(instance, args)


def _load(target: str) -> ReactiveTasks:
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise CommandError(f"{target!r}: expected MODULE or MODULE:ATTRIBUTE")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the project's modules
    try:
        module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as error:
        raise CommandError(
            f"could not import {module_name}: {type(error).__name__}: {error}"
        ) from None
    if attribute:
        return _named(module, module_name, attribute)
    default = api.initialized()
    if default is not None and (default.definitions or default.has_cron_tasks):
        return default
    found = []
    for name, value in vars(module).items():
        instance = _instance_of(value, f"{module_name}:{name}", call=False)
        if instance is not None and instance not in found:
            found.append(instance)
    if len(found) == 1:
        return found[0]
    raise CommandError(
        f"{module_name} registers no task on the default instance"
        + (" and defines several ReactiveTasks" if found else "")
        + f"; name one as {module_name}:ATTRIBUTE"
    )


def _named(module: object, module_name: str, attribute: str) -> ReactiveTasks:
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise CommandError(f"{module_name} has no attribute {attribute!r}")
        value = getattr(value, part)
    found = _instance_of(value, f"{module_name}:{attribute}", call=True)
    if found is None:
        raise CommandError(
            f"{module_name}:{attribute} is a {type(value).__name__}, not a ReactiveTasks, "
            "a Flask app with the Mongoreact extension, that extension, or a factory of one"
        )
    return found


def _instance_of(value: object, where: str, *, call: bool) -> ReactiveTasks | None:
    """The instance ``value`` stands for: a ``ReactiveTasks``; the Flask extension
    (``Mongoreact``, after ``init_app``); a Flask app it was initialised on; or, with
    ``call``, a function returning one of these (an app factory)."""
    from .contrib.flask import EXTENSION_KEY, Mongoreact

    if isinstance(value, ReactiveTasks):
        return value
    if isinstance(value, Mongoreact):
        try:
            return value.engine
        except MongoReactError:
            raise CommandError(f"{where}: the extension has no app yet (call init_app)") from None
    extensions = getattr(value, "extensions", None)
    registered = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    if isinstance(registered, ReactiveTasks):
        return registered
    if call and callable(value) and not isinstance(value, type):
        try:
            made = value()
        except TypeError as error:
            raise CommandError(f"{where}: calling it failed: {error}") from None
        return _instance_of(made, where, call=False)
    return None


def _serve_probes(instance: ReactiveTasks, args: argparse.Namespace) -> ProbeServer:
    try:
        probe = ProbeServer(ProbeApp(instance), args.metrics_host, args.metrics_port)
    except OSError as error:
        raise CommandError(f"--metrics-port={args.metrics_port}: {error}") from None
    probe.start()
    logger.info("metrics on http://%s:%d/metrics, health on /health", args.metrics_host, probe.port)
    return probe


def _run_until_signalled(instance: ReactiveTasks, args: argparse.Namespace) -> int:
    probe: list[ProbeServer] = []

    def started() -> None:
        if args.metrics_port is not None:
            probe.append(_serve_probes(instance, args))
        logger.info(
            "worker %s running %d task(s); stop with SIGTERM or Ctrl+C",
            instance.instance_id, len(instance.definitions),
        )  # fmt: skip

    try:
        outcome = run_until_signalled(
            instance,
            stop_timeout=args.stop_timeout,
            connect_timeout=args.connect_timeout,
            started=started,
        )
    except (ConfigError, MongoReactError) as error:
        code = EXIT_UNREACHABLE if isinstance(error, ServerUnreachableError) else EXIT_BAD_INPUT
        raise CommandError(str(error), code) from None
    except PyMongoError as error:
        raise unreachable(instance.settings.uri, error_summary(error)) from None
    finally:
        for server in probe:
            server.stop()
    return 0 if outcome.clean else EXIT_UNCLEAN
