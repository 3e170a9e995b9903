"""A fixed pool of daemon worker threads for handlers.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits,
so one handler still running after ``stop(timeout)`` would hold the process up for as
long as it runs. These threads are daemons: ``stop()`` bounds the wait, the process
exits, and the abandoned run's record is claimed again once its lease expires.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class DaemonThreadPool:
    """``size`` named daemon threads running submitted calls in order of submission.

    ``grow()`` adds a thread in place of one a call keeps busy for good (a handler past
    its timeout); ``retire_one()`` then has the next thread to finish a call exit, so
    the pool returns to its size once that call ends."""

    def __init__(self, size: int, name_prefix: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future[object], Callable[[], object]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._shut_down = False
        self._name_prefix = name_prefix
        self._surplus = 0  # threads to retire as they finish their calls
        self._threads: list[threading.Thread] = []
        for _ in range(size):
            self._add_thread()

    def _add_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"{self._name_prefix}_{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def grow(self) -> None:
        """One more thread (until shut down)."""
        with self._lock:
            if not self._shut_down:
                self._add_thread()

    def retire_one(self) -> None:
        """Have the calling pool thread exit after its current call."""
        with self._lock:
            self._surplus += 1

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
            threads = list(self._threads)
        if wait:
            # One deadline for them all: a thread held by a hung call must not cost
            # the whole timeout once per thread.
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

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
            with self._lock:
                if self._surplus > 0:
                    self._surplus -= 1
                    self._threads.remove(threading.current_thread())
                    return
