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

    def check_filters(self, filters: Document) -> None:
        """``ConfigError`` for a filter that would read around the redaction, one
        count at a time: a source filter on a hidden field (``{"email": {"$regex":
        "^a"}}``), or an error filter while error texts are hidden."""
        if self.errors and filters.get("error") is not None:
            raise ConfigError("error", "<redacted>", "error texts are redacted here")
        source = filters.get("source_doc_filter")
        if self.fields and source is not None:
            for path in _field_paths(source):
                if path == "$expr":
                    raise ConfigError("sourceFilter", "$expr", "can read redacted fields")
                if any(path == f or path.startswith(f + ".") or f.startswith(path + ".")
                       for f in self.fields):  # fmt: skip
                    raise ConfigError("sourceFilter", path, "filters on a redacted field")

    def audit(self, entry: Document) -> Document:
        """An audit log entry as the page may show it: its scope hidden when it names
        a redacted field or an error text."""
        scope = str(entry.get("scope", ""))
        named = any(f'"{f.split(".")[0]}' in scope for f in self.fields)
        if named or (self.errors and '"error": "' in scope):
            entry = {**entry, "scope": REDACTED}
        return entry

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


def _field_paths(query: object, prefix: str = "") -> list[str]:
    """The field paths a query names, through ``$and``/``$or``/``$nor``/``$not`` and
    ``$elemMatch`` (operators' own keys are not fields)."""
    paths: list[str] = []
    if isinstance(query, dict):
        for key, value in query.items():
            if not isinstance(key, str):
                continue
            if key.startswith("$"):
                if key in ("$and", "$or", "$nor") and isinstance(value, list):
                    for part in value:
                        paths += _field_paths(part, prefix)
                elif key in ("$not", "$elemMatch"):
                    paths += _field_paths(value, prefix)
                elif key == "$expr":
                    paths.append("$expr")  # an expression can read any field
                continue
            path = f"{prefix}{key}"
            paths.append(path)
            paths += _field_paths(value, path + ".")
    return paths
