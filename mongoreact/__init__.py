"""mongoreact: background jobs that run when MongoDB documents change."""

from __future__ import annotations

from ._version import __version__
from .api import init, instance, register, start, stop, task
from .context import TaskContext
from .definition import CleanupPolicy, Evolution, TaskDefinition
from .engine import ReactiveTasks
from .errors import ConfigError, MongoReactError, NotStartedError, TaskConditionFailedError
from .policies.retry import RetryPolicy
from .records import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    PROCESSING_DIRTY,
    STATUSES,
    TaskInfo,
)
from .settings import MonitoringOptions

__all__ = [
    "COMPLETED",
    "FAILED",
    "PENDING",
    "PROCESSING",
    "PROCESSING_DIRTY",
    "STATUSES",
    "CleanupPolicy",
    "ConfigError",
    "Evolution",
    "MongoReactError",
    "MonitoringOptions",
    "NotStartedError",
    "ReactiveTasks",
    "RetryPolicy",
    "TaskConditionFailedError",
    "TaskContext",
    "TaskDefinition",
    "TaskInfo",
    "__version__",
    "init",
    "instance",
    "register",
    "start",
    "stop",
    "task",
]
