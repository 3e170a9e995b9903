"""Long commands give the event loop back, so they never stall other connections.

The embedded server runs every command on one asyncio loop. mongoeco 4.11.0 runs a
multi-document update or delete as one engine call per document and a find as a
generator over the matching documents, all without suspending: an ``update_many`` over
30 000 documents held every other connection for 11 s. The engine calls
:meth:`Pacer.breathe` between documents; when the loop has not run anything else for
``budget`` seconds it yields once, and whatever other commands are ready run (MongoDB
also yields inside long operations; none of them is isolated from other writes).

The other stall is Python's own: a full garbage collection walks every tracked object,
and the server holds several per stored document and change event (300-600 ms at
100 000 documents). :func:`freeze_survivors` moves the objects that survived a
collection of the middle or oldest generation out of the collector's sight
(``gc.freeze``), so a full collection only walks what was allocated since the last
one. Freezing after full collections only was not enough: the next full collection
comes once a quarter as many objects as it last found have survived since, and walking
those (an ``update_many`` of 10 000 documents of 100 000 leaves about that many) held
the loop 70-100 ms. Objects are still freed by reference counting; what a frozen object
would leak is a reference cycle it joins later. asyncio breaks the cycles of a closed
connection itself: 4 500 clients, each connecting, failing a write, a command and a
transaction, and watching a stream, grew the server by about the same 1 MB with and without
freezing after middle-generation collections. Only the server's own process (``python
-m mongoreact.testing.server``) does it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Yield at least this often: the longest stall a command causes is about this plus the
# longest single step between two breathe() calls.
BUDGET_SECONDS = 0.02
# How long a long command stands aside each time it yields.
YIELD_SECONDS = 0.002


class Pacer:
    """Decides when a long command yields (see the module docstring)."""

    def __init__(self, budget: float = BUDGET_SECONDS) -> None:
        self._budget = budget
        self._resumed = time.monotonic()

    def command_started(self) -> None:
        """A command starts: it runs a full budget before its first yield (otherwise a
        short command after an idle spell would stand aside at its first step)."""
        self._resumed = time.monotonic()

    async def breathe(self) -> None:
        """Yield to the loop if it has not run anything else for the budget."""
        if time.monotonic() - self._resumed < self._budget:
            return
        # One loop turn is not enough: a waiting command needs several (its request is
        # read, run through a few awaits, its reply written), and each would wait for
        # another budget. A short sleep lets them all run in between.
        await asyncio.sleep(YIELD_SECONDS)
        self._resumed = time.monotonic()

    async def paced(self, source: AsyncIterator[T]) -> AsyncIterator[T]:
        """``source``, breathing before each item."""
        async for item in source:
            await self.breathe()
            yield item


def freeze_survivors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """After each collection of the middle or oldest generation, freeze the survivors
    (see the module docstring); returns the function that stops doing so."""

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= 1:
            loop.call_soon_threadsafe(gc.freeze)  # not from inside the collector

    gc.callbacks.append(collected)
    return lambda: gc.callbacks.remove(collected)
