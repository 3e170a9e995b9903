"""Prometheus metrics and a health endpoint over HTTP, for workers outside a web app.

``GET /metrics``: the instance's Prometheus metrics (text exposition format).
``GET /health``: ``200`` with a JSON body while the instance runs and every background
thread is alive, ``503`` otherwise - a liveness probe for container orchestrators.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)


class Probed(Protocol):
    """What the probes ask of the instance (``ReactiveTasks``), declared here so that
    monitoring never imports the layer that serves it."""

    def health(self) -> dict[str, Any]: ...
    def prometheus_registry(self) -> CollectorRegistry | None: ...


class ProbeApp:
    """The WSGI application behind ``mongoreact run --metrics-port``."""

    def __init__(self, instance: Probed) -> None:
        self._instance = instance

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"GET only\n")
        if path == "/health":
            health = self._instance.health()
            status = "200 OK" if health["healthy"] else "503 Service Unavailable"
            body = json.dumps(health, sort_keys=True).encode() + b"\n"
            return _answer(start_response, status, body, "application/json")
        if path == "/metrics":
            return self._metrics(start_response)
        return _answer(start_response, "404 Not Found", b"/metrics or /health\n")

    def _metrics(self, start_response: StartResponse) -> Iterable[bytes]:
        registry = self._instance.prometheus_registry()
        if registry is None:
            body = b"monitoring is disabled, or prometheus-client is not installed\n"
            return _answer(start_response, "404 Not Found", body)
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        return _answer(start_response, "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)


def _answer(
    start_response: StartResponse, status: str, body: bytes, content_type: str = "text/plain"
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    """Requests are logged at DEBUG through ``logging``, not printed to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow page never holds a health probe up."""

    daemon_threads = True


def make_quiet_server(host: str, port: int, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    """A threaded WSGI server for ``app`` that logs requests at DEBUG (``port`` 0: any
    free one)."""
    server: WSGIServer = make_server(
        host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler
    )
    return server


class ProbeServer:
    """Serves an ``app`` on ``host:port`` from a daemon thread (``port`` 0: any free)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], host: str, port: int) -> None:
        self._server = make_quiet_server(host, port, app)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mongoreact-probe", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_port)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
