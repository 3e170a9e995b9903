"""pytest fixtures for code that uses MongoDB: ``mongo_uri`` and ``mongo_client``.

Installed with mongoreact (entry point ``pytest11``). With ``MONGOREACT_TEST_URI`` set
the fixtures use that server (a real replica set); otherwise one embedded server is
started for the whole test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from .embedded import EmbeddedServer

TEST_URI_VARIABLE = "MONGOREACT_TEST_URI"


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """URI of the MongoDB server the tests use."""
    configured = os.environ.get(TEST_URI_VARIABLE)
    if configured:
        yield configured
        return
    with EmbeddedServer() as server:
        yield server.uri


@pytest.fixture
def mongo_client(mongo_uri: str) -> Iterator[MongoClient[dict[str, object]]]:
    """A pymongo client connected to ``mongo_uri``, closed after the test."""
    client: MongoClient[dict[str, object]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=20_000)
    try:
        yield client
    finally:
        client.close()
