"""The Django app: builds the default instance and imports task modules when ready."""

from __future__ import annotations

import atexit
import importlib
import importlib.util

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
        if getattr(settings, "MONGOREACT_AUTOSTART", False):
            api.start()
            atexit.register(api.stop)


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
