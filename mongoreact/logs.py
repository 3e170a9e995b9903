"""Structured logs: one JSON object a line (``mongoreact run --log-format json``).

Every line carries the time (UTC), level, logger, thread and message, a traceback when
there is one, and, for lines logged during a run (by mongoreact or by the handler
itself, on the run's thread), the run's ``task``, ``doc_id``, ``attempt`` and
``instance_id``, so a log pipeline can index them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, Final

RUN_FIELDS: Final = ("task", "doc_id", "attempt", "instance_id")
_current = threading.local()


@contextlib.contextmanager
def run_fields(fields: dict[str, Any]) -> Iterator[None]:
    """Within the block, log records of this thread carry ``fields`` (see
    ``RunFieldsFilter``)."""
    previous = getattr(_current, "fields", None)
    _current.fields = fields
    try:
        yield
    finally:
        _current.fields = previous


class RunFieldsFilter(logging.Filter):
    """Attach the fields of the run under way on the logging thread to each record
    (fields passed with ``extra=`` win); installed on the handler, so records logged by
    a handler's own code get them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(_current, "fields", None)
        if fields:
            for name, value in fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        for name in RUN_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def json_handler(stream: Any) -> logging.Handler:
    """A stream handler writing JSON lines with the run fields."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RunFieldsFilter())
    return handler
