"""A TCP proxy that delays every byte by a fixed one-way latency, in both directions.

Benchmarks on a server on the same host see no network: a round trip costs what the
server's work costs. Put this proxy in front of the server and every round trip costs
at least twice ``delay`` more, as over a network, for both libraries alike::

    with LatencyProxy("127.0.0.1", 27017, delay=0.001) as proxy:
        uri = proxy.uri()   # mongodb://127.0.0.1:<port>/?directConnection=true

``directConnection=true`` keeps the drivers on the proxy: a replica set member
advertises its own address, which drivers would otherwise switch to. Order is kept per
direction; bandwidth is not limited.

The benchmark runs it in a process of its own (``ProxyProcess``, or
``python -m benchmarks.proxy HOST PORT DELAY_MS``): in the benchmark's process its
forwarding would compete with mongoreact's threads for the GIL, and not with the
reference's Node processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

CHUNK: Final = 1 << 16


def proxy_uri(port: int, database: str = "") -> str:
    """A MongoDB URI through a proxy listening on ``port`` (see the module's note on
    ``directConnection``)."""
    return f"mongodb://127.0.0.1:{port}/{database}?directConnection=true"


class LatencyProxy:
    """Listens on a free local port and forwards to ``host:port`` after ``delay`` s."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)

    def uri(self, database: str = "") -> str:
        """A MongoDB URI through the proxy."""
        return proxy_uri(self.port, database)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """End every connection's tasks inside the loop, then stop it."""
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _connection(self, client_r: Any, client_w: Any) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except ConnectionError:
            pass
        finally:
            for writer in (client_w, server_w):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward ``reader`` to ``writer``, each chunk ``delay`` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    return
                wait = arrived + self.delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic(), data))
            queue.put_nowait((time.monotonic(), b""))
            await delivering  # what is in flight still arrives, late
            writer.close()  # and the end too: the other side then closes its half
        finally:
            delivering.cancel()
            with contextlib.suppress(BaseException):
                await delivering


class ProxyProcess:
    """A ``LatencyProxy`` in a child process, for as long as the context lasts."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self._arguments = [host, str(port), str(delay * 1000)]
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    def uri(self, database: str = "") -> str:
        """A MongoDB URI through the proxy."""
        return proxy_uri(self.port, database)

    def __enter__(self) -> ProxyProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.proxy", *self._arguments],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self._process.kill()
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child's cue to stop
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()


def main(arguments: list[str]) -> None:
    """Serve until standard input closes; print the port first."""
    host, port, delay_ms = arguments
    with LatencyProxy(host, int(port), delay=float(delay_ms) / 1000) as proxy:
        print(proxy.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
