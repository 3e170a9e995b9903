"""Retryable writes: a write sent again with the same ``lsid`` and ``txnNumber`` is not
applied again; the first result is returned, as a MongoDB replica set does.

Drivers retry a write once after a network error or a primary step-down, with the same
session and transaction number. MongoDB remembers, per session, the result of the
latest transaction number and answers a retry from it; without that the embedded
server applied such writes twice (an insert twice, a ``$inc`` twice, a fenced update
that then matched nothing). Only writes outside multi-document transactions are
concerned: a transaction's statements carry ``autocommit: false`` and are retried as a
whole by ``commitTransaction``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

from . import errors
from .errors import CommandError

RETRYABLE_COMMANDS: Final = frozenset({"insert", "update", "delete", "findAndModify"})
MAX_SESSIONS: Final = 10_000  # sessions whose last retryable write is remembered

Reply = dict[str, Any]


class RetryableWrites:
    """The last retryable write's result per session (bounded, least recently used)."""

    def __init__(self) -> None:
        # session key -> (txnNumber, the reply, or a future while it runs)
        self._sessions: OrderedDict[Any, tuple[int, asyncio.Future[Reply]]] = OrderedDict()

    async def run(
        self, name: str, body: dict[str, Any], session: Any, execute: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """``execute()`` the write unless it is a retry of the session's last one."""
        txn_number = body.get("txnNumber")
        if (
            name not in RETRYABLE_COMMANDS
            or session is None
            or txn_number is None
            or body.get("autocommit") is False
        ):
            return await execute()
        number = int(getattr(txn_number, "value", txn_number))
        known = self._sessions.get(session)
        if known is not None:
            last, outcome = known
            if number == last:
                self._sessions.move_to_end(session)
                # The first attempt's reply (awaited if it is still running).
                return dict(await asyncio.shield(outcome))
            if number < last:
                raise CommandError(
                    errors.TRANSACTION_TOO_OLD,
                    f"retryable write with txnNumber {number} is prohibited on session "
                    f"because a newer retryable write with txnNumber {last} has already "
                    "started on this session",
                )
        outcome = asyncio.get_running_loop().create_future()
        self._sessions[session] = (number, outcome)
        self._sessions.move_to_end(session)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        try:
            reply = await execute()
        except BaseException as error:
            self._forget(session, number, outcome)
            outcome.set_exception(error)
            outcome.exception()  # retrieved: a retry that is not waiting must not warn
            raise
        if reply.get("ok") != 1:
            # A failed command changed nothing a retry could repeat: let it run again.
            self._forget(session, number, outcome)
        outcome.set_result(reply)
        return reply

    def _forget(self, session: Any, number: int, outcome: asyncio.Future[Reply]) -> None:
        if self._sessions.get(session) == (number, outcome):
            del self._sessions[session]

    def end_sessions(self, sessions: list[Any]) -> None:
        """Forget ended sessions."""
        for session in sessions:
            self._sessions.pop(session, None)
