"""``with_transaction(fn)``: ``fn(session)`` in a transaction, with post-commit hooks.

The driver's ``ClientSession.with_transaction`` (pymongo >= 4.9) retries the whole
callback on ``TransientTransactionError`` and the commit on ``UnknownTransactionCommitResult``.
Hooks registered with ``register_post_commit_hook(session, hook)`` are dropped when an
attempt is retried and run once, in order, only after the commit succeeded; a failing
hook is logged, not raised (the transaction is already committed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.client_session import ClientSession

from .errors import MongoReactError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_hooks: dict[int, list[Callable[[], object]]] = {}
_lock = threading.Lock()


def with_transaction(client: MongoClient[Any], fn: Callable[[ClientSession], T]) -> T:
    """Run ``fn(session)`` in a transaction; returns what ``fn`` returned."""
    with client.start_session() as session:
        key = id(session)

        def attempt(current: ClientSession) -> T:
            with _lock:
                _hooks[key] = []  # a retried attempt starts without the old hooks
            return fn(current)

        try:
            result: T = session.with_transaction(attempt)
            with _lock:
                hooks = _hooks.pop(key, [])
        finally:
            with _lock:
                _hooks.pop(key, None)
    for hook in hooks:
        _run_hook(hook)
    return result


def _run_hook(hook: Callable[[], object]) -> None:
    try:
        hook()
    except Exception:
        logger.exception("post-commit hook %r failed", hook)


def register_post_commit_hook(session: ClientSession, hook: Callable[[], object]) -> None:
    """Run ``hook()`` after ``session``'s transaction commits (and never if it aborts)."""
    with _lock:
        hooks = _hooks.get(id(session))
        if hooks is None or not session.in_transaction:
            raise MongoReactError("register_post_commit_hook needs a with_transaction session")
        hooks.append(hook)
