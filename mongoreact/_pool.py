"""A fixed pool of daemon worker threads for handlers.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits,
so one handler still running after ``stop(timeout)`` would hold the process up for as
long as it runs. These threads are daemons: ``stop()`` bounds the wait, the process
exits, and the abandoned run's record is claimed again once its lease expires.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class DaemonThreadPool:
    """``size`` named daemon threads running submitted calls in order of submission."""

    def __init__(self, size: int, name_prefix: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[object], Callable[[], object]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._shut_down = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name_prefix}_{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` on a pool thread; ``RuntimeError`` once shut down."""
        future: Future[T] = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("the pool is shut down")
            self._work.put((future, fn))  # type: ignore[arg-type]
        return future

    def shutdown(self, wait: bool, timeout: float | None = None) -> bool:
        """Let the threads finish what they run and exit; with ``wait``, wait up to
        ``timeout`` seconds for them. Whether every thread has exited."""
        with self._lock:
            if not self._shut_down:
                self._shut_down = True
                for _ in self._threads:
                    self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                result = fn()
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
