"""The ``mongoreact`` command line (also ``python -m mongoreact``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading

from .cli_dashboard import add_dashboard_command
from .cli_run import add_run_command
from .cli_tasks import CommandError, add_commands
from .testing import EmbeddedServer

logger = logging.getLogger(__name__)


def _demo(args: argparse.Namespace) -> int:
    if not args.serve:
        from .demo import run_demo

        return run_demo()
    with EmbeddedServer() as server:
        print(f"embedded MongoDB-compatible server running at {server.uri}", flush=True)
        print("press Ctrl+C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
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
