"""mongoreact: background jobs that run when MongoDB documents change."""

from __future__ import annotations

from ._version import __version__
from .errors import ConfigError, MongoReactError

__all__ = ["ConfigError", "MongoReactError", "__version__"]
