"""Distributed locks: ``with_lock(key, ttl=..., wait=...)``.

A lock is a document in ``_mongoreact_locks`` taken with the server's clock and renewed
while held (every ``ttl / 5``) by a background thread. Renewal and release are fenced on
the holder's ``lockId``, so a holder whose lock expired (a long pause, a lost network)
can neither extend nor release the lock someone else took since. ``fencing_token``
grows with every acquisition of a key: pass it along to systems that can reject stale
writers. A key's document stays after release to keep that counter.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.database import Database

from ._threads import Renewal
from .config.durations import parse_duration
from .errors import ConfigError, MongoReactError
from .store.locks import LockStore

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class LockAlreadyAcquiredError(MongoReactError):
    """Another holder kept the lock for longer than ``wait``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lock {key!r} is held by someone else")
        self.key = key


class Lock:
    """A distributed lock; use as a context manager or a decorator."""

    def __init__(
        self, database: Database[dict[str, Any]], key: object, *, ttl: object, wait: object
    ) -> None:
        self.key = str(key)  # like the reference: 100 and "100" are the same lock
        self._store = LockStore(database)
        self._ttl = parse_duration(ttl, "ttl")
        self._wait = parse_duration(wait, "wait")
        if self._ttl <= dt.timedelta(0):
            raise ConfigError("ttl", ttl, "must be greater than zero")
        self._lock_id: ObjectId | None = None
        self._renewal: Renewal | None = None
        self.fencing_token: int | None = None
        self.lost = False

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait``; ``LockAlreadyAcquiredError`` if not."""
        deadline = time.monotonic() + self._wait.total_seconds()
        delay = 0.05
        lock_id = ObjectId()
        while True:
            token = self._store.try_acquire(self.key, lock_id, self._ttl)
            if token is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockAlreadyAcquiredError(self.key)
            # A back-off between tries, in the caller's thread: nothing here can end it
            # early (the holder is another thread or process, seen only by trying).
            time.sleep(min(remaining, delay * random.uniform(1.0, 1.2)))
            delay = min(delay * 2, max(self._wait.total_seconds() / 3, 0.05))
        self._lock_id, self.fencing_token, self.lost = lock_id, token, False
        self._renewal = Renewal(
            f"mongoreact-lock-{self.key}",
            self._ttl.total_seconds() / 5,
            lambda: self._store.renew(self.key, lock_id, self._ttl),
            on_lost=self._lose,
        )
        self._renewal.start()

    def release(self) -> None:
        """Give the lock back (only if this holder still has it)."""
        if self._renewal is not None:
            self._renewal.stop()
            self._renewal.join()
            self._renewal = None
        if self._lock_id is not None:
            self._store.release(self.key, self._lock_id)
            self._lock_id = None

    def _lose(self) -> None:
        self.lost = True
        logger.warning("lock %r expired and was taken by someone else", self.key)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]
