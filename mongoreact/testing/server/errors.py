"""Command errors with MongoDB's codes, rendered as the server's error replies."""

from __future__ import annotations

from typing import Any

# The MongoDB error codes this server raises itself (src/mongo/base/error_codes.yml).
BAD_VALUE = 2
FAILED_TO_PARSE = 9
CURSOR_NOT_FOUND = 43
INVALID_NAMESPACE = 73
ILLEGAL_OPERATION = 20
CURSOR_KILLED = 237
INVALID_RESUME_TOKEN = 260
CHANGE_STREAM_FATAL = 280
CHANGE_STREAM_HISTORY_LOST = 286
NO_MATCHING_DOCUMENT = 47
LOCATION_40415_UNKNOWN_FIELD = 40415
LOCATION_40602_NOT_FIRST = 40602
LOCATION_51183_NO_UNIQUE_INDEX = 51183
DUPLICATE_KEY = 11000
TRANSACTION_TOO_OLD = 225
INVALID_OPTIONS = 72
NAMESPACE_EXISTS = 48
NOT_IN_TRANSACTION = 263
UNRECOGNIZED_STAGE = 40324
NAMESPACE_NOT_FOUND = 26
BSON_OBJECT_TOO_LARGE = 10334
LOCATION_7182802_SPLIT_NOT_LAST = 7182802
WRITE_CONFLICT = 112
NO_SUCH_TRANSACTION = 251
AUTHENTICATION_FAILED = 18
# The label drivers retry a whole transaction on.
TRANSIENT_TRANSACTION = ("TransientTransactionError",)

_CODE_NAMES = {
    BAD_VALUE: "BadValue",
    FAILED_TO_PARSE: "FailedToParse",
    ILLEGAL_OPERATION: "IllegalOperation",
    CURSOR_NOT_FOUND: "CursorNotFound",
    NO_MATCHING_DOCUMENT: "NoMatchingDocument",
    INVALID_NAMESPACE: "InvalidNamespace",
    CURSOR_KILLED: "CursorKilled",
    INVALID_RESUME_TOKEN: "InvalidResumeToken",
    CHANGE_STREAM_FATAL: "ChangeStreamFatalError",
    CHANGE_STREAM_HISTORY_LOST: "ChangeStreamHistoryLost",
    DUPLICATE_KEY: "DuplicateKey",
    TRANSACTION_TOO_OLD: "TransactionTooOld",
    INVALID_OPTIONS: "InvalidOptions",
    NAMESPACE_EXISTS: "NamespaceExists",
    NOT_IN_TRANSACTION: "OperationNotSupportedInTransaction",
    NAMESPACE_NOT_FOUND: "NamespaceNotFound",
    BSON_OBJECT_TOO_LARGE: "BSONObjectTooLarge",
    WRITE_CONFLICT: "WriteConflict",
    NO_SUCH_TRANSACTION: "NoSuchTransaction",
    AUTHENTICATION_FAILED: "AuthenticationFailed",
}


def code_name(code: int) -> str:
    """The ``codeName`` MongoDB replies with beside ``code``."""
    return _CODE_NAMES.get(code, f"Location{code}")


class CommandError(Exception):
    """A command failed with a MongoDB error code."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        labels: tuple[str, ...] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = labels
        self.details = details or {}  # further fields of the reply (keyPattern, ...)

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": code_name(self.code),
        }
        if self.labels:
            reply["errorLabels"] = list(self.labels)
        reply.update(self.details)
        return reply


def history_lost(detail: str) -> CommandError:
    # Real servers label it non-resumable so drivers surface it instead of retrying.
    return CommandError(
        CHANGE_STREAM_HISTORY_LOST,
        f"Resume of change stream was not possible, as the resume point may no longer be "
        f"in the oplog ({detail})",
        labels=("NonResumableChangeStreamError",),
    )
