"""Keep personal data off the dashboard's page: watched values (whole documents, at
times) and error texts (a traceback can quote a value) are replaced by a marker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from ..errors import ConfigError

Document = dict[str, Any]
REDACTED: Final = "[redacted]"
# Where records and cron runs keep error texts.
_ERROR_FIELDS: Final = ("lastError", "lastErrorTraceback", "error", "traceback")


def _paths(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError("redact_fields", value, "expected a list of field paths")
    paths = tuple(value)
    for path in paths:
        if not isinstance(path, str) or not path or path.startswith("$") or ".." in path:
            raise ConfigError("redact_fields", path, "expected a field path such as 'email'")
    return paths


@attrs.frozen
class Redaction:
    """``fields``: paths (``"email"``, ``"customer.phone"``) hidden from the watched
    values, a path hiding everything under it; ``errors``: error messages and
    tracebacks hidden too (the exception's type is kept)."""

    fields: tuple[str, ...] = attrs.field(default=(), converter=_paths)
    errors: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def record(self, record: Document) -> Document:
        """``record`` (a task record or a cron task) as the page may show it."""
        if self.fields and isinstance(record.get("lastObservedValues"), dict):
            record["lastObservedValues"] = self._hide(record["lastObservedValues"], "")
        if self.errors:
            _hide_errors(record)
            for entry in record.get("executionHistory") or record.get("runLog") or []:
                if isinstance(entry, dict):
                    _hide_errors(entry)
        return record

    def _hide(self, values: Document, prefix: str) -> Document:
        shown: Document = {}
        for key, value in values.items():
            path = f"{prefix}{key}"
            if any(path == f or path.startswith(f + ".") for f in self.fields):
                shown[key] = REDACTED
            elif isinstance(value, dict):
                shown[key] = self._hide(value, path + ".")
            elif isinstance(value, list):
                shown[key] = [
                    self._hide(item, path + ".") if isinstance(item, dict) else item
                    for item in value
                ]
            else:
                shown[key] = value
        return shown


def _hide_errors(entry: Document) -> None:
    for field in _ERROR_FIELDS:
        text = entry.get(field)
        if isinstance(text, str) and text:
            # "ValueError: card 4111..." keeps "ValueError": what failed, not the data.
            kind = text.split(":", 1)[0] if ":" in text.splitlines()[0] else ""
            entry[field] = f"{kind}: {REDACTED}" if kind and " " not in kind else REDACTED
