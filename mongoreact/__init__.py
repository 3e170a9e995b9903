"""mongoreact: background jobs that run when MongoDB documents change."""

from __future__ import annotations

from ._version import __version__
from .api import (
    audit_log,
    count_tasks,
    cron_task,
    dashboard_app,
    get_task,
    get_tasks,
    init,
    install_signal_handlers,
    instance,
    prometheus_registry,
    register,
    retry_tasks,
    run_cron_task,
    run_until_signalled,
    start,
    stop,
    task,
    with_lock,
    with_transaction,
)
from .batches import process_in_batches
from .config.definition import CleanupPolicy, Evolution, TaskDefinition
from .config.options import InitOptions, TaskOptions
from .config.retry import RetryPolicy
from .config.settings import MonitoringOptions
from .errors import (
    ConfigError,
    HandlerTimeoutError,
    MongoReactError,
    NotStartedError,
    ServerUnreachableError,
    StartCancelledError,
    TaskConditionFailedError,
    TaskLeaseLostError,
)
from .execution.context import TaskContext
from .locks import Lock, LockAlreadyAcquiredError
from .management import RetryResult
from .reactive_tasks import ReactiveTasks
from .records import (
    COMPLETED,
    FAILED,
    PENDING,
    PROCESSING,
    PROCESSING_DIRTY,
    STATUSES,
    TaskInfo,
)
from .transactions import register_post_commit_hook

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
    "HandlerTimeoutError",
    "InitOptions",
    "Lock",
    "LockAlreadyAcquiredError",
    "MongoReactError",
    "MonitoringOptions",
    "NotStartedError",
    "ReactiveTasks",
    "RetryPolicy",
    "RetryResult",
    "ServerUnreachableError",
    "StartCancelledError",
    "TaskConditionFailedError",
    "TaskContext",
    "TaskDefinition",
    "TaskInfo",
    "TaskLeaseLostError",
    "TaskOptions",
    "__version__",
    "audit_log",
    "count_tasks",
    "cron_task",
    "dashboard_app",
    "get_task",
    "get_tasks",
    "init",
    "install_signal_handlers",
    "instance",
    "process_in_batches",
    "prometheus_registry",
    "register",
    "register_post_commit_hook",
    "retry_tasks",
    "run_cron_task",
    "run_until_signalled",
    "start",
    "stop",
    "task",
    "with_lock",
    "with_transaction",
]
