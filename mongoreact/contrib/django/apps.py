"""The Django app: builds the default instance and imports task modules when ready.

``MONGOREACT_AUTOSTART = True`` starts the workers in the processes that serve the
application (a WSGI/ASGI server, ``runserver``), not in every ``manage.py`` command: a
``shell`` or a ``migrate`` must not start claiming tasks. ``MONGOREACT_AUTOSTART_COMMANDS``
lists the management commands that do start them (default: ``runserver``).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import sys
from typing import Final

from django.apps import AppConfig, apps
from django.conf import settings

from ... import api
from ...errors import ConfigError


class MongoreactConfig(AppConfig):  # type: ignore[misc]
    """``mongoreact.contrib.django``."""

    name = "mongoreact.contrib.django"
    label = "mongoreact"
    verbose_name = "mongoreact"

    def ready(self) -> None:
        options = getattr(settings, "MONGOREACT", None)
        if not isinstance(options, dict):
            raise ConfigError("MONGOREACT", options, "set MONGOREACT to a dict of init options")
        api.init(**options)
        for module in task_modules():
            importlib.import_module(module)
        if getattr(settings, "MONGOREACT_AUTOSTART", False) and _serves_the_app(sys.argv):
            api.start()
            atexit.register(api.stop)


DEFAULT_AUTOSTART_COMMANDS: Final = ("runserver",)
_MANAGEMENT_PROGRAMS: Final = ("manage.py", "django-admin", "django-admin.py", "__main__.py")


def _serves_the_app(argv: list[str]) -> bool:
    """Whether this process serves the application: not a management command, or one
    of ``MONGOREACT_AUTOSTART_COMMANDS``."""
    program = os.path.basename(argv[0]) if argv else ""
    if program not in _MANAGEMENT_PROGRAMS:
        return True  # gunicorn, uwsgi, daphne, a script...
    command = argv[1] if len(argv) > 1 else ""
    allowed = getattr(settings, "MONGOREACT_AUTOSTART_COMMANDS", DEFAULT_AUTOSTART_COMMANDS)
    return command in allowed


def task_modules() -> list[str]:
    """The modules that register tasks."""
    configured = getattr(settings, "MONGOREACT_TASK_MODULES", None)
    if configured is not None:
        return list(configured)
    found = []
    for config in apps.get_app_configs():
        candidate = f"{config.name}.reactive_tasks"
        if importlib.util.find_spec(candidate) is not None:
            found.append(candidate)
    return found
