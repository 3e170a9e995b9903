"""Decoding a request without holding the event loop, however many documents it carries.

mongoeco 4.11.0's ``decode_op_msg`` turns a whole OP_MSG into Python values in one
step: about 85 ms for an ``insert_many`` of 10 000 small documents, during which no
other connection is served. Drivers send a bulk write's documents as a document
sequence (an OP_MSG section of kind 1), so :func:`decode_body` lets mongoeco decode and
check the message with each large sequence emptied, then decodes that sequence's
documents itself in slices, awaiting ``breathe`` (the engine's pacer) between them.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from bson import BSON
from mongoeco.wire.bson_bridge import decode_wire_value
from mongoeco.wire.protocol import MessageHeader, decode_op_msg

# Sequences smaller than this are left to mongoeco (decoded in well under a millisecond).
LARGE_SEQUENCE_BYTES: Final = 64 * 1024
# Documents decoded between two calls of ``breathe`` (about 2 ms of work).
SLICE_DOCUMENTS: Final = 256
_CHECKSUM_PRESENT: Final = 1
_INT32 = struct.Struct("<i")


async def decode_body(
    header: MessageHeader, payload: bytes, breathe: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """The command document of an OP_MSG, its document sequences included (as
    ``decode_op_msg(header, payload).body``); raises what mongoeco raises for a
    malformed message."""
    large = _large_sequences(payload)
    if not large:
        body: dict[str, Any] = decode_op_msg(header, payload).body
        return body
    trimmed, start = [], 0
    for section_start, identifier, _, section_end in large:
        # The section kept with its identifier and no documents: mongoeco still checks
        # the message's shape and places an empty list under the identifier.
        identifier_bytes = identifier.encode() + b"\0"
        trimmed += [payload[start : section_start + 1], _INT32.pack(4 + len(identifier_bytes))]
        trimmed.append(identifier_bytes)
        start = section_end
    trimmed.append(payload[start:])
    body = decode_op_msg(header, b"".join(trimmed)).body
    assert isinstance(body, dict)
    for _, identifier, documents_start, section_end in large:
        decoded: list[Any] = body[identifier]
        for index, raw in enumerate(_documents(payload, documents_start, section_end)):
            if index % SLICE_DOCUMENTS == 0:
                await breathe()
            decoded.append(decode_wire_value(BSON(raw).decode()))
    return body


def _large_sequences(payload: bytes) -> list[tuple[int, str, int, int]]:
    """``(section start, identifier, documents start, section end)`` of each document
    sequence larger than ``LARGE_SEQUENCE_BYTES``; none when the message is small, has
    a checksum (emptying a section would break it) or is malformed (then mongoeco's
    decoding reports the fault)."""
    if len(payload) < LARGE_SEQUENCE_BYTES:
        return []
    if int.from_bytes(payload[:4], "little") & _CHECKSUM_PRESENT:
        return []
    found: list[tuple[int, str, int, int]] = []
    position = 4
    while position < len(payload):
        kind = payload[position]
        if kind not in (0, 1) or position + 5 > len(payload):
            return []
        (size,) = _INT32.unpack_from(payload, position + 1)
        end = position + 1 + size
        if size <= 4 or end > len(payload):
            return []
        if kind == 1 and size > LARGE_SEQUENCE_BYTES:
            try:
                identifier_end = payload.index(0, position + 5, end)
                identifier = payload[position + 5 : identifier_end].decode()
            except (ValueError, UnicodeDecodeError):
                return []
            found.append((position, identifier, identifier_end + 1, end))
        position = end
    return found


def _documents(payload: bytes, start: int, end: int) -> Iterator[bytes]:
    """The raw BSON documents of a sequence, checked as mongoeco checks them."""
    position = start
    while position < end:
        if position + 4 > end:
            raise ValueError("OP_MSG document sequence entry is truncated")
        (size,) = _INT32.unpack_from(payload, position)
        if size <= 0 or position + size > end:
            raise ValueError("OP_MSG document sequence entry has invalid size")
        yield payload[position : position + size]
        position += size
