"""``python -m mongoreact.testing.server``: serve until SIGTERM or SIGINT.

The first line on stdout is the ``mongodb://`` URI to connect to.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import seam


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mongoreact.testing.server",
        description="Embedded MongoDB-compatible server (replica-set primary) for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--history-size",
        type=int,
        default=100_000,
        help="change events retained for resuming streams (100000)",
    )
    parser.add_argument("--replica-set", default="rs0", help="replica set name (rs0)")
    parser.add_argument(
        "--cursor-timeout",
        type=float,
        default=600.0,
        help="seconds after which an unread change stream is closed (600)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (WARNING)")
    args = parser.parse_args(argv)
    if args.history_size < 1:
        parser.error(f"--history-size must be at least 1, got {args.history_size}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.cursor_timeout <= 0:
        parser.error(f"--cursor-timeout must be positive, got {args.cursor_timeout}")
    return args


async def _serve(args: argparse.Namespace) -> None:
    # Imported after the seam's check: another mongoeco would fail these imports with
    # a bare ImportError instead of the check's message.
    from .pacing import freeze_survivors
    from .wire import EmbeddedMongoServer

    server = EmbeddedMongoServer(
        host=args.host,
        port=args.port,
        history_size=args.history_size,
        replica_set=args.replica_set,
        cursor_timeout=args.cursor_timeout,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    freeze_survivors(loop)  # this process is the server's own: see pacing.py
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sys.stdout.write(server.uri + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        seam.check()
    except seam.SeamError as error:
        sys.stderr.write(f"{error}\n")
        raise SystemExit(2) from None
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
