"""The ``mongoreact`` command line (also ``python -m mongoreact``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from .cli_dashboard import add_dashboard_command
from .cli_run import add_run_command
from .cli_tasks import CommandError, add_commands, port_number
from .errors import MongoReactError
from .testing import EmbeddedServer
from .testing._interpreter import FIRST_RUN_NOTICE, server_ready

logger = logging.getLogger(__name__)


def _demo(args: argparse.Namespace) -> int:
    if not args.serve:
        from .demo import run_demo

        return run_demo()
    return _serve(argparse.Namespace(port=0, host="127.0.0.1"))


def _serve(args: argparse.Namespace) -> int:
    """The embedded server until Ctrl+C or SIGTERM, from any supported Python (it runs
    on a Python 3.13 of its own when this one cannot host it)."""
    if not server_ready():
        print(FIRST_RUN_NOTICE, file=sys.stderr, flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with EmbeddedServer(port=args.port) as server:
            print(f"embedded MongoDB-compatible server running at {server.uri}", flush=True)
            print("press Ctrl+C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except MongoReactError as error:
        raise CommandError(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mongoreact", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo on an embedded server")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="only start an embedded server and keep it running (for your own experiments)",
    )
    demo.set_defaults(run=_demo)
    server = commands.add_parser(
        "server",
        help="run the embedded MongoDB-compatible server (a replica-set primary) for tests "
        "and experiments",
    )
    server.add_argument("--port", type=port_number, default=0, help="TCP port (0: any free one)")
    server.set_defaults(run=_serve)
    add_run_command(commands)
    add_commands(commands)
    add_dashboard_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mongoreact`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except CommandError as error:
        print(f"mongoreact: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
