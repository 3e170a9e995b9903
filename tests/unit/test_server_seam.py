"""The seam between the embedded server and mongoeco (mongoreact/testing/server/seam.py):
the installed mongoeco has every internal the server relies on, and still calls every
method the server overrides. A renamed hook would otherwise fail silently: the override
never called, isolation or unique-index semantics quietly lost.

It needs mongoeco, so Python 3.13: marked ``once``, which CI runs on 3.13 only.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any

import pytest

pytestmark = pytest.mark.once


def test_the_installed_mongoeco_has_what_the_server_relies_on() -> None:
    from mongoreact.testing.server import seam

    assert seam.problems() == []


def test_a_missing_internal_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from mongoreact.testing.server import seam

    names = {**seam.PRIVATE_NAMES, seam.MEMORY_ENGINE: ("_storage", "_renamed_away")}
    monkeypatch.setattr(seam, "PRIVATE_NAMES", names)
    with pytest.raises(seam.SeamError, match=r"MemoryEngine\._renamed_away is gone"):
        seam.check()


def _spy(cls: type, name: str, calls: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    original = getattr(cls, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def spied_async(*args: Any, **kwargs: Any) -> Any:
            calls.add(name)
            return await original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spied_async)
    else:

        @functools.wraps(original)
        def spied(*args: Any, **kwargs: Any) -> Any:
            calls.add(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spied)


async def _workload() -> None:
    from bson import Int64
    from mongoeco.api import AsyncMongoClient
    from mongoeco.errors import DuplicateKeyError

    from mongoreact.testing.server.storage_engine import FastMemoryEngine

    client = AsyncMongoClient(engine=FastMemoryEngine())
    items = client["seam"]["items"]
    await items.create_index([("code", 1)], unique=True)
    await items.insert_many([{"_id": n, "code": n, "due": 100 - n} for n in range(50)])
    await items.insert_one({"_id": "s", "code": "s", "due": 0})
    with pytest.raises(DuplicateKeyError):
        await items.insert_one({"_id": "t", "code": 3})
    assert await items.find_one({"_id": Int64(3)}) is not None
    assert len(await items.find({"_id": {"$in": [1.0, 2, "s"]}}).to_list()) == 3
    assert len(await items.find({}).sort("due", 1).limit(3).to_list()) == 3
    await items.update_one({"_id": 4}, {"$set": {"v": 1}})
    await items.update_many({"due": {"$lt": 60}}, {"$inc": {"v": 1}})
    await items.delete_one({"_id": 5})
    await items.delete_many({"due": {"$gt": 95}})
    session = client.start_session()
    session.start_transaction()
    await items.insert_one({"_id": "in-txn", "code": "x"}, session=session)
    session.commit_transaction()
    session.start_transaction()
    await items.insert_one({"_id": "aborted", "code": "y"}, session=session)
    session.abort_transaction()
    assert await items.find_one({"_id": "in-txn"}) is not None
    assert await items.find_one({"_id": "aborted"}) is None


def test_mongoeco_still_calls_every_method_the_server_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mongoreact.testing.server import seam
    from mongoreact.testing.server.storage_engine import FastMemoryEngine

    overridden = seam.OVERRIDDEN[seam.MEMORY_ENGINE]
    calls: set[str] = set()
    for name in overridden:
        _spy(FastMemoryEngine, name, calls, monkeypatch)
    asyncio.run(_workload())
    assert sorted(set(overridden) - calls) == []
