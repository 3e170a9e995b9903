"""Cluster time and resume tokens.

Every change event gets its own BSON ``Timestamp`` from one logical clock, so cluster
times are strictly increasing and a resume token maps back to exactly one position in the
history. Tokens are hex strings that sort in event order, like MongoDB's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Token layout: "82" + seconds (8 hex) + increment (8 hex) + kind (2 hex). MongoDB's
# tokens (4.2+) also start with 0x82, the KeyString type of a Timestamp, and then the
# cluster time, so a client reads the time of either the same way. Kind 00 is a
# "high-water mark" (a postBatchResumeToken between events), 01 an event, 02 the
# invalidate a collection or database stream emits after the event at that time.
_PREFIX: Final = "82"
HIGH_WATER: Final = "00"
EVENT: Final = "01"
INVALIDATE: Final = "02"
# A fragment of an event $changeStreamSplitLargeEvent split: its number (4 hex) follows.
FRAGMENT: Final = "03"
_KINDS: Final = (HIGH_WATER, EVENT, INVALIDATE, FRAGMENT)
_TOKEN_LENGTH: Final = 20
_FRAGMENT_TOKEN_LENGTH: Final = 24


@dataclass(frozen=True, order=True)
class ClusterTime:
    """A point of the cluster clock: (seconds, increment), ordered like BSON Timestamps."""

    seconds: int
    increment: int

    def just_before(self) -> ClusterTime:
        """The greatest cluster time strictly smaller than this one."""
        if self.increment > 0:
            return ClusterTime(self.seconds, self.increment - 1)
        return ClusterTime(self.seconds - 1, 0xFFFFFFFF)

    def token(self, kind: str) -> str:
        return f"{_PREFIX}{self.seconds:08X}{self.increment:08X}{kind}"

    def fragment_token(self, fragment: int) -> str:
        """The token of fragment ``fragment`` (from 1) of the event at this time."""
        return f"{self.token(FRAGMENT)}{fragment:04X}"


@dataclass(frozen=True)
class DecodedToken:
    """What a resume token points at."""

    time: ClusterTime
    kind: str
    fragment: int | None = None  # for FRAGMENT tokens


class InvalidToken(ValueError):
    """A resume token this server did not issue."""


def decode_token(data: object) -> DecodedToken:
    """Decode the ``_data`` string of a resume token."""
    lengths = (_TOKEN_LENGTH, _FRAGMENT_TOKEN_LENGTH)
    if not isinstance(data, str) or len(data) not in lengths or not data.startswith(_PREFIX):
        raise InvalidToken(f"malformed resume token: {data!r}")
    try:
        seconds = int(data[2:10], 16)
        increment = int(data[10:18], 16)
        fragment = int(data[20:], 16) if len(data) == _FRAGMENT_TOKEN_LENGTH else None
    except ValueError as error:
        raise InvalidToken(f"malformed resume token: {data!r}") from error
    kind = data[18:20]
    if kind not in _KINDS or (kind == FRAGMENT) != (fragment is not None):
        raise InvalidToken(f"malformed resume token: {data!r}")
    return DecodedToken(ClusterTime(seconds, increment), kind, fragment)


class ClusterClock:
    """Hands out strictly increasing cluster times.

    ``tick()`` stamps a new event. ``now()`` reads the clock for operationTime and
    high-water marks without stamping; it never goes backwards and every later ``tick()``
    is strictly greater than anything ``now()`` returned.
    """

    def __init__(self, wall_seconds: Callable[[], float] = time.time) -> None:
        self._wall = wall_seconds
        self._last = ClusterTime(int(self._wall()), 0)

    def tick(self) -> ClusterTime:
        seconds = int(self._wall())
        if seconds > self._last.seconds:
            self._last = ClusterTime(seconds, 1)
        else:
            self._last = ClusterTime(self._last.seconds, self._last.increment + 1)
        return self._last

    def now(self) -> ClusterTime:
        seconds = int(self._wall())
        if seconds > self._last.seconds:
            # Advance to (seconds, 0): no event can ever be stamped with increment 0,
            # so a later tick in this second is still strictly greater.
            self._last = ClusterTime(seconds, 0)
        return self._last
