"""Run the embedded MongoDB-compatible server in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from ..errors import MongoReactError
from ._interpreter import server_python

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class EmbeddedServerError(MongoReactError):
    """The embedded server did not start."""


class EmbeddedServer:
    """A MongoDB-compatible replica-set primary in a child process, for tests and demos.

    Use it as a context manager; ``uri`` is a ``mongodb://`` URI for pymongo::

        with EmbeddedServer() as server:
            client = pymongo.MongoClient(server.uri)

    ``history_size`` bounds the retained change events (older resume points then fail
    with ``ChangeStreamHistoryLost``); ``cursor_timeout`` closes change streams nobody
    has read for that many seconds.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        history_size: int = 100_000,
        replica_set: str = "rs0",
        cursor_timeout: float = 600.0,
        python: str | None = None,
        startup_timeout: float = 120.0,
        log_level: str = "WARNING",
    ) -> None:
        self._arguments = [
            "--port",
            str(port),
            "--history-size",
            str(history_size),
            "--replica-set",
            replica_set,
            "--cursor-timeout",
            str(cursor_timeout),
            "--log-level",
            log_level,
        ]
        self._python = python
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._uri: str | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="mongoreact-server-", suffix=".log", delete=False
        )

    @property
    def uri(self) -> str:
        if self._uri is None:
            raise EmbeddedServerError("the embedded server is not running")
        return self._uri

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> str:
        return self._log.name

    def start(self) -> str:
        """Start the server and return its URI (idempotent)."""
        if self._uri is not None:
            return self._uri
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [_PACKAGE_PARENT, environment.get("PYTHONPATH")])
        )
        process = subprocess.Popen(
            [self._python or server_python(), "-m", "mongoreact.testing.server", *self._arguments],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        self._process = process
        first_line: list[str] = []
        reader = threading.Thread(
            target=lambda: first_line.append(process.stdout.readline() if process.stdout else ""),
            name="mongoreact-server-startup",
            daemon=True,
        )
        reader.start()
        reader.join(self._startup_timeout)
        uri = first_line[0].strip() if first_line else ""
        if not uri.startswith("mongodb://"):
            self.stop()
            log = Path(self._log.name).read_text(errors="replace")[-4000:]
            raise EmbeddedServerError(f"the embedded server did not start:\n{log}")
        self._uri = uri
        return uri

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        process, self._process = self._process, None
        self._uri = None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._log.close()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self.stop()

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
