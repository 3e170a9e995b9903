"""Write concerns a single replica-set member cannot satisfy.

The embedded server is the only member of its replica set, so a write concern asking
more than one member to acknowledge can never be met. MongoDB answers such a command
as it does any write concern it cannot wait for: the command runs, its reply is
``ok: 1``, and ``writeConcernError`` says why the concern failed (code 100,
``UnsatisfiableWriteConcern``, "Not enough data-bearing nodes"). Drivers raise
``WriteConcernError`` on it; accepting the command silently would let a test pass
that fails on a real single-member set.
"""

from __future__ import annotations

from typing import Any, Final

UNSATISFIABLE_WRITE_CONCERN: Final = 100
MEMBERS: Final = 1


def unsatisfiable(body: dict[str, Any]) -> bool:
    """Whether ``body``'s write concern asks more members to acknowledge than there are."""
    concern = body.get("writeConcern")
    if not isinstance(concern, dict):
        return False
    wanted = concern.get("w")
    wanted = getattr(wanted, "value", wanted)  # an Int64 arrives wrapped
    return not isinstance(wanted, bool) and isinstance(wanted, int) and wanted > MEMBERS


def for_engine(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as mongoeco runs it: an unsatisfiable ``w`` asks for one member
    (mongoeco refuses any ``w`` above 1, where MongoDB runs the command first)."""
    if not unsatisfiable(body):
        return body
    return {**body, "writeConcern": {**body["writeConcern"], "w": MEMBERS}}


def checked(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` to ``body`` (as the client sent it) with a ``writeConcernError`` if it
    asked more members to acknowledge than there are."""
    if reply.get("ok") != 1 or not unsatisfiable(body):
        return reply
    concern = body["writeConcern"]
    return {
        **reply,
        "writeConcernError": {
            "code": UNSATISFIABLE_WRITE_CONCERN,
            "codeName": "UnsatisfiableWriteConcern",
            "errmsg": "Not enough data-bearing nodes",
            "errInfo": {"writeConcern": {**concern, "provenance": "clientSupplied"}},
        },
    }
