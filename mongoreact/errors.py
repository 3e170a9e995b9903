"""The exceptions mongoreact raises."""

from __future__ import annotations


class MongoReactError(Exception):
    """Base class of every mongoreact error."""


class ConfigError(MongoReactError, ValueError):
    """An option has a bad value; the message names the option and the value."""

    def __init__(self, option: str, value: object, problem: str) -> None:
        if isinstance(value, str) and "://" in value and "@" in value:
            # A URI with credentials given where it does not belong (a misspelled
            # option, client=, database=): never echoed, it may hold a password.
            value = "<a URI with credentials>"
        super().__init__(f"{option}={value!r}: {problem}")
        self.option = option
        self.value = value
        self.problem = problem


class TaskConditionFailedError(MongoReactError):
    """The source document is gone, no longer matches the task's filter, or its watched
    values changed since the run was planned; the run is skipped, not failed."""

    def __init__(self, task: str, doc_id: object) -> None:
        super().__init__(
            f"task {task!r}: document {doc_id!r} no longer qualifies (deleted, not matching "
            "the filter, or its watched values changed)"
        )
        self.task = task
        self.doc_id = doc_id


class TaskLeaseLostError(MongoReactError):
    """This run no longer owns its task record: its lease expired and another worker
    claimed the record. Raised by ``ctx.mark_completed(session=...)`` inside the
    handler's transaction, so the transaction aborts and its writes never happen twice."""

    def __init__(self, task: str, doc_id: object) -> None:
        super().__init__(
            f"task {task!r}: the run for document {doc_id!r} lost its lease (another worker "
            "owns the record now); its transaction must not commit"
        )
        self.task = task
        self.doc_id = doc_id


class NotStartedError(MongoReactError):
    """An operation needs ``start()`` (or ``init()``) first."""


class StartCancelledError(MongoReactError):
    """``stop()`` (a signal, in ``run_until_signalled``) cancelled a ``start()`` that was
    still waiting for MongoDB; the instance is stopped."""


class ServerUnreachableError(MongoReactError):
    """``start()`` could not reach MongoDB within its timeout, or the server refused the
    credentials; the message says which, with the URI's secrets masked."""


class HandlerTimeoutError(MongoReactError):
    """A handler ran past its task's ``timeout``: the run counts as failed (the retry
    policy applies) and whatever it does afterwards is discarded."""
