"""Testing support: the embedded MongoDB-compatible server and pytest fixtures."""

from __future__ import annotations

from ._interpreter import ServerInterpreterError
from .embedded import EmbeddedServer, EmbeddedServerError

__all__ = ["EmbeddedServer", "EmbeddedServerError", "ServerInterpreterError"]
