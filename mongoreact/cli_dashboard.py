"""``mongoreact dashboard``: serve the web dashboard on its own.

Beyond loopback it needs authentication (``--users-file``, ``--tokens-file``, or
``MONGOREACT_DASHBOARD_PASSWORD`` / ``MONGOREACT_DASHBOARD_TOKEN``): secrets come from
files or the environment, never argv. ``--insecure-no-auth`` overrides that refusal,
for a dashboard behind a proxy that authenticates.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from .cli_tasks import CommandError, connect, connection_uri, port_number
from .config.settings import URI_VARIABLE
from .dashboard import Redaction, auth_from
from .dashboard.security import LOOPBACK_HOSTS
from .errors import ConfigError
from .reactive_tasks import ReactiveTasks


def add_dashboard_command(commands: Any) -> None:
    """Add ``dashboard``: serve the web dashboard."""
    parser = commands.add_parser(
        "dashboard",
        help="serve the web dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--uri", help=f"MongoDB URI (default and better: ${URI_VARIABLE})")
    parser.add_argument("--database", help="database (default: the URI's)")
    parser.add_argument("--globals-collection", default="_mongoreact_globals")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8080)
    parser.add_argument(
        "--allowed-host", action="append", dest="allowed_hosts", metavar="NAME",
        help="a host name the dashboard answers to (repeatable; '.example.com' for a domain; "
        "default: the loopback names and --host)",
    )  # fmt: skip
    parser.add_argument(
        "--users-file",
        help="basic-auth users, one 'role:name:password' a line (role: viewer or operator)",
    )
    parser.add_argument("--tokens-file", help="bearer tokens, one 'role:name:token' a line")
    parser.add_argument(
        "--insecure-no-auth", action="store_true",
        help="listen beyond loopback without authentication (behind an authenticating proxy)",
    )  # fmt: skip
    parser.add_argument("--read-only", action="store_true", help="everyone is a viewer")
    parser.add_argument(
        "--redact-field", action="append", default=[], metavar="PATH",
        help="a watched field never shown (repeatable), e.g. email or customer.phone",
    )  # fmt: skip
    parser.add_argument(
        "--redact-errors", action="store_true", help="show error types, not messages"
    )
    parser.set_defaults(run=serve_dashboard)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    from .monitoring.http import make_quiet_server

    try:
        auth = auth_from(users_file=args.users_file, tokens_file=args.tokens_file)
        redaction = Redaction(fields=tuple(args.redact_field), errors=args.redact_errors)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    if auth is None and not is_loopback(args.host) and not args.insecure_no_auth:
        raise CommandError(
            f"--host {args.host} lets other machines in, and no authentication is set: give "
            "--users-file or --tokens-file (or set MONGOREACT_DASHBOARD_PASSWORD or "
            "MONGOREACT_DASHBOARD_TOKEN), or --insecure-no-auth behind a proxy that "
            "authenticates"
        )
    listening = (
        f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    )
    allowed = args.allowed_hosts or [*LOOPBACK_HOSTS] + (
        [] if is_loopback(args.host) or args.host in ("0.0.0.0", "::") else [listening]
    )
    client, database = connect(connection_uri(args), args.database)
    try:
        engine = ReactiveTasks(
            client=client, database=database, globals_collection=args.globals_collection
        )
        app = engine.dashboard_app(
            read_only=args.read_only, auth=auth, allowed_hosts=allowed, redaction=redaction
        )
    except ConfigError as error:
        client.close()
        raise CommandError(str(error)) from None
    try:
        with make_quiet_server(args.host, args.port, app) as server:
            print(
                f"mongoreact dashboard on http://{args.host}:{server.server_port}/ "
                f"(answers to {', '.join(allowed)}; "
                + ("authentication required)" if auth else "no authentication)"),
                flush=True,
            )
            server.serve_forever()
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    finally:
        client.close()
    return 0
