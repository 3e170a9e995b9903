"""Testing support: the embedded MongoDB-compatible server, pytest fixtures, and helpers
for tests of applications that use mongoreact."""

from __future__ import annotations

from ._interpreter import ServerInterpreterError
from .embedded import EmbeddedServer, EmbeddedServerError
from .helpers import FAST_SETTINGS, assert_no_task_errors, wait_until_idle

__all__ = [
    "FAST_SETTINGS",
    "EmbeddedServer",
    "EmbeddedServerError",
    "ServerInterpreterError",
    "assert_no_task_errors",
    "wait_until_idle",
]
