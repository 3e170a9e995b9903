"""The embedded server decodes a large request in slices, to the same command mongoeco
would decode in one step (mongoreact/testing/server/messages.py).

It needs mongoeco, so Python 3.13: marked ``once``, which CI runs on 3.13 only.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import bson
import pytest

pytestmark = pytest.mark.once

OP_MSG = 2013
LARGE_SEQUENCE_BYTES = 64 * 1024  # checked against the module's below
SLICE_DOCUMENTS = 256


def _body_section(document: dict[str, Any]) -> bytes:
    return b"\x00" + bson.encode(document)


def _sequence_section(identifier: str, documents: list[bytes]) -> bytes:
    name = identifier.encode() + b"\x00"
    content = name + b"".join(documents)
    return b"\x01" + struct.pack("<i", 4 + len(content)) + content


def _message(*sections: bytes) -> tuple[Any, bytes]:
    from mongoeco.wire.protocol import MessageHeader

    payload = struct.pack("<I", 0) + b"".join(sections)
    return MessageHeader(16 + len(payload), 7, 0, OP_MSG), payload


def _mongoecos(header: Any, payload: bytes) -> dict[str, Any]:
    from mongoeco.wire.protocol import decode_op_msg

    body: dict[str, Any] = decode_op_msg(header, payload).body
    return body


def _decode(header: Any, payload: bytes) -> tuple[dict[str, Any], int]:
    from mongoreact.testing.server import messages

    assert (messages.LARGE_SEQUENCE_BYTES, messages.SLICE_DOCUMENTS) == (
        LARGE_SEQUENCE_BYTES, SLICE_DOCUMENTS,
    )  # fmt: skip
    breaths = 0

    async def breathe() -> None:
        nonlocal breaths
        breaths += 1

    return asyncio.run(messages.decode_body(header, payload, breathe)), breaths


def _documents(count: int) -> list[bytes]:
    return [
        bson.encode({"_id": bson.ObjectId(), "i": i, "nested": {"at": [i, "x" * 40]}})
        for i in range(count)
    ]


@pytest.mark.parametrize("sequence_first", [False, True])
def test_a_large_sequence_decodes_in_slices_to_what_mongoeco_decodes(
    sequence_first: bool,
) -> None:
    documents = _documents(3 * SLICE_DOCUMENTS + 5)
    assert sum(map(len, documents)) > LARGE_SEQUENCE_BYTES
    body = _body_section({"insert": "items", "ordered": True, "$db": "shop"})
    small = _sequence_section("extra", documents[:2])
    large = _sequence_section("documents", documents)
    sections = (large, body, small) if sequence_first else (body, small, large)
    header, payload = _message(*sections)

    decoded, breaths = _decode(header, payload)

    assert decoded == _mongoecos(header, payload)
    assert len(decoded["documents"]) == len(documents) and len(decoded["extra"]) == 2
    assert breaths == 4  # before each slice of SLICE_DOCUMENTS documents


def test_a_small_message_is_mongoecos_to_decode() -> None:
    header, payload = _message(
        _body_section({"insert": "items", "$db": "shop"}),
        _sequence_section("documents", _documents(3)),
    )
    decoded, breaths = _decode(header, payload)
    assert decoded == _mongoecos(header, payload) and breaths == 0


def test_a_truncated_document_in_a_large_sequence_is_refused() -> None:
    documents = _documents(2 * SLICE_DOCUMENTS)
    documents[-1] = struct.pack("<i", 500) + documents[-1][4:]  # claims more than is there
    header, payload = _message(
        _body_section({"insert": "items", "$db": "shop"}),
        _sequence_section("documents", documents),
    )
    with pytest.raises(ValueError, match="invalid size"):
        _decode(header, payload)


def test_a_sequence_named_like_a_body_field_is_refused_as_mongoeco_refuses_it() -> None:
    header, payload = _message(
        _body_section({"insert": "items", "documents": [], "$db": "shop"}),
        _sequence_section("documents", _documents(2 * SLICE_DOCUMENTS)),
    )
    with pytest.raises(ValueError, match="duplicate"):
        _mongoecos(header, payload)
    with pytest.raises(ValueError, match="duplicate"):
        _decode(header, payload)
