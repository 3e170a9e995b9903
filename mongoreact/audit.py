"""Who steers task records: the identity every management call that changes records is
audited under (``<globals>_audit``, see ``store/audit.py``).

The dashboard and the CLI name their user with ``acting_as``; a call made outside one
(an operator's script, a shell) is audited as the OS user, through ``api``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import attrs

_current = threading.local()


@attrs.frozen
class Actor:
    """Who acts: a name, a role (``viewer`` or ``operator``) and the way in
    (``dashboard``, ``cli``, ``api``)."""

    name: str
    role: str = "operator"
    via: str = "api"


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Within the block (this thread), changes are audited as made by ``actor``."""
    previous = getattr(_current, "actor", None)
    _current.actor = actor
    try:
        yield
    finally:
        _current.actor = previous


def current_actor() -> Actor:
    """The actor of the block under way, else the OS user of this process."""
    actor = getattr(_current, "actor", None)
    return actor if isinstance(actor, Actor) else Actor(os_user())


def os_user() -> str:
    """``user@host`` of this process (``uid N`` where the user has no name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def scope_of(
    task: str | None = None,
    statuses: Any = None,
    error: Any = None,
    source_doc_filter: Any = None,
    **more: Any,
) -> dict[str, Any]:
    """An action's scope for the log: the filters given, without the empty ones."""
    scope = {"task": task, "status": list(statuses) if statuses else None,
             "error": getattr(error, "pattern", error), "source_doc_filter": source_doc_filter,
             **more}  # fmt: skip
    return {key: value for key, value in scope.items() if value not in (None, [], {})}
