"""mongoeco's Spanish error messages, answered in English with MongoDB's codes.

mongoeco 4.11.0 words some of its query-parsing and session errors in Spanish (``$in
necesita una lista``) and raises several without a code. MongoDB answers them in
English with code 2 (BadValue), and where drivers or applications match on the text,
with MongoDB's own words (``$in needs an array``). Every reply's ``errmsg`` (and its
write errors') goes through :func:`translated`; the table below holds each message
mongoeco has in Spanish (found by reading its source: the messages of ``raise`` and
``message =`` statements), checked by ``tests/unit/test_server_english.py``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from . import errors

# (mongoeco's message as a pattern, MongoDB's). The patterns are searched in the
# message, which mongoeco may prefix or suffix.
_MESSAGES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), english)
    for pattern, english in (
        (r"\$(in|nin|all) necesita una lista", r"$\1 needs an array"),
        (
            r"\$(and|or|nor) debe recibir una lista no vacia",
            "$and/$or/$nor must be a nonempty array",
        ),
        (r"\$(and|or|nor) necesita una lista de filtros", r"$\1 must be an array"),
        (r"\$elemMatch necesita una expresion de filtro", "$elemMatch needs an Object"),
        (r"\$mod necesita un divisor numerico distinto de cero", "divisor cannot be 0"),
        (r"\$mod necesita un resto numerico", "malformed mod, remainder not a number"),
        (r"\$mod necesita una lista de dos numeros", "malformed mod, not enough elements"),
        (r"\$not necesita una expresion de operador", "$not needs a regex or a document"),
        (r"\$options necesita un string", "$options has to be a string"),
        (r"\$regex necesita un patron string o regex compilada", "$regex has to be a string"),
        (r"\$size necesita un entero no negativo", "$size needs a non-negative whole number"),
        (r"\$type necesita al menos un tipo", "$type must match at least one type"),
        (
            r"\$type necesita alias string o codigo entero BSON",
            "type must be represented as a number or a string",
        ),
        (
            r"\$type no acepta booleanos como identificadores de tipo",
            "type must be represented as a number or a string",
        ),
        (r"\$type usa un alias BSON no soportado", "Unknown type name alias"),
        (r"\$type usa un codigo BSON no soportado", "Invalid numerical type code"),
        (r"La sesion ya esta cerrada", "Cannot use an ended session"),
        (r"No hay una transaccion activa en esta sesion", "No transaction started"),
        (
            r"Ya hay una transaccion activa en esta sesion",
            "Transaction already in progress on this session",
        ),
        (
            r"ID invalido tipo [^:]*: ",
            "an ObjectId must be 12 bytes or a 24-character hex string: ",
        ),
        (r"bytes de ObjectId deben ser de 12, no (\d+)", r"ObjectId bytes must be 12, not \1"),
        (
            r"string de ObjectId debe ser de 24 hex, no (\d+)",
            r"an ObjectId string must be 24 hex characters, not \1",
        ),
    )
)


def english(message: str) -> str | None:
    """``message`` in English if it is one of mongoeco's Spanish ones, else ``None``."""
    for pattern, replacement in _MESSAGES:
        if pattern.search(message):
            return pattern.sub(replacement, message)
    return None


def translated(reply: dict[str, Any]) -> dict[str, Any]:
    """``reply`` with its error messages in English (and BadValue's code where mongoeco
    gave none); unchanged if nothing was Spanish."""
    _translate(reply)
    for write_error in reply.get("writeErrors") or ():
        if isinstance(write_error, dict):
            _translate(write_error)
    return reply


def _translate(error: dict[str, Any]) -> None:
    message = error.get("errmsg")
    text = english(message) if isinstance(message, str) else None
    if text is None:
        return
    error["errmsg"] = text
    if "code" not in error:
        error["code"] = errors.BAD_VALUE
        if "ok" in error:  # a command's reply, not a write error
            error["codeName"] = errors.code_name(errors.BAD_VALUE)
