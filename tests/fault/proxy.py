"""A TCP proxy that can drop every connection or stall all traffic on demand (the fault
tests' network)."""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``drop_all()`` cuts every connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self.drops = 0
        self.stalls = 0
        threading.Thread(target=self._accept, name="fault-proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="fault-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source)
            self._close(sink)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def drop_all(self) -> None:
        """Cut every open connection (clients see a network error)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._close(sock)
        self.drops += 1

    def stall(self, seconds: float) -> None:
        """Hold every byte in both directions for ``seconds`` (connections stay open:
        a hung network or server, not a reset)."""
        self._flowing.clear()
        self.stalls += 1
        timer = threading.Timer(seconds, self._flowing.set)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        self._flowing.set()
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()
