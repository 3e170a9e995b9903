"""The embedded server's followers stay exact when writes land while they are built.

A follower (an ordered index, the numeric ``_id`` set) is built by a task that yields to
the event loop as it goes; writes made meanwhile are applied when it ends, and a write
it cannot follow (a rolled-back batch) leaves it unusable until rebuilt. Random writes
interleaved with builds; whenever a follower says it is usable, it must describe the
collection exactly as a build from scratch does.

In-process on the engine (it needs mongoeco, so Python 3.13: marked ``once``, which CI
runs on 3.13 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

pytestmark = pytest.mark.once


def _contents(follower: Any) -> Any:
    """What a follower describes, without its insertion sequence numbers."""
    if hasattr(follower, "_buckets"):
        return {
            group: [(keys, storage_key) for keys, _, storage_key in entries]
            for group, entries in follower._buckets.items()
        }
    return {number: set(keys) for number, keys in follower._keys.items()}


async def _scenario(seed: int) -> int:
    from mongoeco.api import AsyncMongoClient
    from mongoeco.errors import BulkWriteError, DuplicateKeyError

    from mongoreact.testing.server.follow import NumericIds
    from mongoreact.testing.server.ordered import OrderedIndex
    from mongoreact.testing.server.pacing import Pacer
    from mongoreact.testing.server.storage_engine import FastMemoryEngine

    rng = random.Random(seed)
    engine = FastMemoryEngine()
    engine.pacer = Pacer(budget=0.0)  # yield at every chance: builds interleave with writes
    coll = AsyncMongoClient(engine).db.items
    await coll.insert_many([{"_id": i, "k": i % 7} for i in range(2000)])
    await coll.insert_one({"_id": "s-dup"})

    async def write() -> None:
        # String _ids: a numeric one would make the writer wait for the numeric _id
        # set's build, and writes must land while builds run.
        doc_id = f"s{rng.randrange(1000)}"
        kind = rng.randrange(4)
        try:
            if kind == 0:
                await coll.insert_one({"_id": doc_id, "k": rng.randrange(7)})
            elif kind == 1:
                await coll.update_one({"_id": doc_id}, {"$set": {"k": rng.randrange(7)}})
            elif kind == 2:
                await coll.delete_one({"_id": rng.choice([doc_id, rng.randrange(2000)])})
            else:  # a batch that fails half-way and is rolled back
                await coll.insert_many([{"_id": f"t{doc_id}"}, {"_id": "s-dup"}, {"_id": "u"}])
        except (DuplicateKeyError, BulkWriteError):
            pass

    writing = True

    async def writer() -> None:
        for _ in range(1500):
            await write()
            await asyncio.sleep(0)
        nonlocal writing
        writing = False

    async def reader() -> int:
        checked = 0
        while writing:
            # Reads that use (and so build) the _id index and the numeric _id set.
            after = rng.randrange(3000)
            await coll.find({"_id": {"$gt": after}}).sort("_id", 1).limit(5).to_list()
            with contextlib.suppress(DuplicateKeyError):
                await coll.insert_one({"_id": 50_000 + rng.randrange(10_000)})
            live = engine._storage["db"]["items"]
            for follower in list(engine._followers.values()):
                if follower.usable(live):
                    fresh = (
                        OrderedIndex(follower.prefix, follower.sort)
                        if isinstance(follower, OrderedIndex)
                        else NumericIds()
                    )
                    await fresh.build(live, engine._borrow_storage_document, _no_pause)
                    assert _contents(follower) == _contents(fresh)
                    checked += 1
        return checked

    checked = (await asyncio.gather(writer(), reader()))[1]
    return checked


async def _no_pause() -> None:
    return None


@pytest.mark.parametrize("seed", range(4))
def test_followers_built_under_writes_describe_the_collection(seed: int) -> None:
    assert asyncio.run(_scenario(seed)) > 10
