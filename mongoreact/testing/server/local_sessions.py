"""The logical sessions clients used on this server, as ``$listLocalSessions`` lists them.

MongoDB keeps each session it sees in a cache until the client ends it or it has been
idle for ``logicalSessionTimeoutMinutes`` (30); ``$listLocalSessions`` reads that cache.
Without authentication every session belongs to the same (empty) user, whose ``uid`` is
the SHA-256 of the empty name.
"""

from __future__ import annotations

import datetime
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final

from bson import Binary

SESSION_TIMEOUT: Final = datetime.timedelta(minutes=30)
MAX_SESSIONS: Final = 10_000  # the oldest are forgotten beyond this
_NO_USER: Final = Binary(hashlib.sha256(b"").digest())


class LocalSessions:
    """Sessions seen, most recently used last."""

    def __init__(self) -> None:
        self._seen: OrderedDict[Any, tuple[Any, datetime.datetime]] = OrderedDict()

    def used(self, key: Any, session_id: Any) -> None:
        self._seen[key] = (session_id, datetime.datetime.now(datetime.timezone.utc))
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_SESSIONS:
            self._seen.popitem(last=False)

    def ended(self, keys: Iterable[Any]) -> None:
        for key in keys:
            self._seen.pop(key, None)

    def listed(self) -> list[dict[str, Any]]:
        """``$listLocalSessions`` output: the sessions not idle past the timeout."""
        oldest = datetime.datetime.now(datetime.timezone.utc) - SESSION_TIMEOUT
        return [
            {"_id": {"id": session_id, "uid": _NO_USER}, "lastUse": last_use}
            for session_id, last_use in self._seen.values()
            if last_use >= oldest
        ]
