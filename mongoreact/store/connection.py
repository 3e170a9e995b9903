"""The client and database one mongoreact instance uses, with the concerns it needs."""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from ..config.settings import Settings
from ..errors import ConfigError

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class Connection:
    """The user's ``client``, or one opened from ``uri`` on first use and closed by
    ``close()``; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._opened: MongoClient[Document] | None = None  # ours to close
        self._database: Database[Document] | None = None

    @property
    def is_open(self) -> bool:
        """Whether a client this connection opened is still open."""
        return self._opened is not None

    def database(self) -> Database[Document]:
        """The tasks' database, connecting first if needed; ``ConfigError`` when no
        database is named (``database=``, the URI, or the client's default)."""
        with self._lock:
            if self._database is None:
                self._database = self._connect()
            return self._database

    def close(self) -> None:
        """Close the client this connection opened (never the user's own)."""
        with self._lock:
            client, self._opened, self._database = self._opened, None, None
        if client is not None:
            try:
                client.close()
            except PyMongoError:
                logger.debug("error closing the client", exc_info=True)

    def _connect(self) -> Database[Document]:
        settings = self._settings
        client = settings.client
        if client is None:
            assert settings.uri is not None  # Settings holds exactly one of the two
            client = self._opened = MongoClient(settings.uri, tz_aware=True)
        name = settings.database
        if name is None and settings.uri is not None:
            name = parse_uri(settings.uri).get("database")
        if name is None:
            try:
                name = client.get_default_database().name
            except Exception:
                name = None
        if not name:
            opened, self._opened = self._opened, None
            if opened is not None:
                opened.close()
            raise ConfigError("database", None, "name the database (database= or in the URI)")
        return library_database(client, name)


# How long a write waits for a majority to acknowledge it. Without a bound, a replica
# set that has lost its majority of data-bearing members (a primary, a secondary that is
# down, an arbiter) blocks every library write for ever, with no error and no log; with
# it the write fails (WTimeoutError), is logged at ERROR naming the cause and is retried.
MAJORITY_WAIT_MS: Final = 10_000


def library_database(client: MongoClient[Document], name: str) -> Database[Document]:
    """Database ``name`` as mongoreact uses it, whatever the client's own settings.

    Planning, claims, fences and late-binding reads go to the primary; every write is
    acknowledged by a majority (a write acknowledged by one member can be rolled back
    after a failover, and a rolled-back planning write or resume token loses events);
    reads use "majority" read concern, so nothing decided on them can be rolled back
    (it is also the only read concern MongoDB accepts for change streams). Inside a
    handler's transaction the transaction's own concerns apply (pymongo does that).
    """
    return client.get_database(
        name,
        read_preference=ReadPreference.PRIMARY,
        write_concern=WriteConcern("majority", wtimeout=MAJORITY_WAIT_MS),
        read_concern=ReadConcern("majority"),
    )
