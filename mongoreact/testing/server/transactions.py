"""Transactions that end the way MongoDB ends them (mongoeco 4.11.0's wire session store,
``mongoeco.wire.sessions.WireSessionStore``, extended through its public methods).

What matters to a driver is how a failed transaction ends, and there mongoeco
differed:

- a failed commit raised a code-less error, so ``with_transaction`` did not retry it,
  and left the session inside the dead transaction: the pooled session's later writes
  were visible to that session only. A failed commit is now ``WriteConflict`` (112) with
  the ``TransientTransactionError`` label, and the transaction is aborted;
- an error inside a transaction (a duplicate key, ...) left it open; MongoDB aborts it,
  and the commit then fails with ``NoSuchTransaction`` (251, transient);
- a session that moves on (a new ``startTransaction``, or a command outside any
  transaction) while a transaction is still open implicitly aborts it, as a new
  transaction number does on MongoDB;
- the change events of a committed transaction carry its ``lsid`` and ``txnNumber``.

Conflicts themselves are detected per document (``isolation.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from mongoeco.errors import OperationFailure
from mongoeco.wire._session_identity import wire_session_key
from mongoeco.wire.sessions import WireSessionStore

from .errors import NO_SUCH_TRANSACTION, TRANSIENT_TRANSACTION, WRITE_CONFLICT
from .history import History
from .isolation import no_such_transaction

_NONE = object()


class TransactionSessionStore(WireSessionStore):  # type: ignore[misc]
    """mongoeco's session store with MongoDB's endings of failed transactions."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self._history = history
        self._aborted: dict[str, Any] = {}  # session key -> txnNumber the server aborted

    def resolve_for_command(self, client: Any, body: dict[str, Any], *, capability: Any) -> Any:
        lsid = body.get("lsid")
        if lsid is not None and capability.binds_session:
            session = self._session(lsid)
            in_transaction = body.get("autocommit") is False
            starts = body.get("startTransaction") is True
            if (
                session is not None
                and session.transaction_active
                and (starts or not in_transaction)
            ):
                # The client has moved on from the open transaction: it is over.
                self._abort(session)
            if (
                in_transaction
                and not starts
                and next(iter(body), "") != "abortTransaction"
                and self._aborted.get(wire_session_key(lsid), _NONE) == body.get("txnNumber")
            ):
                raise no_such_transaction()  # a statement of a transaction the server aborted
        return super().resolve_for_command(client, body, capability=capability)

    def commit_transaction(self, body: dict[str, Any]) -> dict[str, Any]:
        key = wire_session_key(body.get("lsid"))
        if key in self._aborted and self._aborted[key] == body.get("txnNumber"):
            raise no_such_transaction()
        session = self._require_session(body)
        if session.transaction_active:
            try:
                txn_number = body.get("txnNumber")
                with self._history.committing(
                    dict(body["lsid"]), int(getattr(txn_number, "value", txn_number) or 0)
                ):
                    session.commit_transaction()
            except OperationFailure as error:
                self._abort(session)
                if error.code in (WRITE_CONFLICT, NO_SUCH_TRANSACTION):
                    raise  # already MongoDB's answer (isolation.py)
                raise OperationFailure(
                    f"WriteConflict error: this operation conflicted with another operation. "
                    f"Please retry your operation or multi-document transaction. ({error})",
                    code=WRITE_CONFLICT,
                    error_labels=TRANSIENT_TRANSACTION,
                ) from error
        return {"ok": 1.0}

    def abort_after_error(self, body: dict[str, Any]) -> None:
        """A statement of a transaction failed: MongoDB aborts the transaction."""
        lsid = body.get("lsid")
        session = self._session(lsid) if lsid is not None else None
        if session is not None and session.transaction_active:
            self._abort(session)
            self._aborted[wire_session_key(lsid)] = body.get("txnNumber")

    def _session(self, lsid: Any) -> Any:
        context = self._sessions.get(wire_session_key(lsid))
        return context.session if context is not None and context.session.active else None

    @staticmethod
    def _abort(session: Any) -> None:
        with contextlib.suppress(Exception):
            session.abort_transaction()
