"""Flask extension: ``Mongoreact(app)`` or ``mongoreact.init_app(app)``.

Configuration comes from ``app.config["MONGOREACT"]`` (the options of
:func:`mongoreact.init`). Tasks may be registered with ``@ext.task(...)`` before or after
``init_app``, but not after the workers started: with ``MONGOREACT_AUTOSTART`` (which
starts them in ``init_app``) decorate every task before. Workers start only where
``MONGOREACT_AUTOSTART`` is true (set it in the processes that should run tasks; start
after the server forks), or with ``ext.start()``. The instance is stopped when the
process exits.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, NotStartedError
from ..execution.context import Handler
from ..reactive_tasks import ReactiveTasks

EXTENSION_KEY = "mongoreact"


class Mongoreact:
    """The extension; one ``ReactiveTasks`` per Flask application."""

    def __init__(self, app: Any = None) -> None:
        self._pending: list[dict[str, Any]] = []
        self._engine: ReactiveTasks | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Build the instance from ``app.config`` and register the pending tasks."""
        options = app.config.get("MONGOREACT")
        if not isinstance(options, dict):
            raise ConfigError("MONGOREACT", options, "set app.config['MONGOREACT'] to a dict")
        engine = ReactiveTasks(**options)
        for registration in self._pending:
            engine.register(**registration)
        self._engine = engine
        app.extensions[EXTENSION_KEY] = engine
        if app.config.get("MONGOREACT_AUTOSTART"):
            self.start()

    def task(
        self, task: str | None = None, collection: str | None = None, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as a task handler."""

        def decorate(handler: Handler) -> Handler:
            registration = {"task": task or handler.__name__, "collection": collection,
                            "handler": handler, **options}  # fmt: skip
            if self._engine is None:
                self._pending.append(registration)
            elif self._engine.is_running:
                raise ConfigError(
                    "task", registration["task"],
                    "the workers started in init_app (MONGOREACT_AUTOSTART): decorate every "
                    "task before init_app, or start them later with ext.start()",
                )  # fmt: skip
            else:
                self._engine.register(**registration)
            return handler

        return decorate

    @property
    def engine(self) -> ReactiveTasks:
        """The instance (after ``init_app``)."""
        if self._engine is None:
            raise NotStartedError("call init_app(app) first")
        return self._engine

    def start(self) -> None:
        """Start the workers in this process; stopped when the process exits."""
        self.engine.start()
        atexit.register(self.engine.stop)
