"""Fixtures for integration tests: engines on a fresh database with fast timings.

Runs against the embedded server, or a real replica set given by MONGOREACT_TEST_URI.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact import ReactiveTasks

from .helpers import FAST, Doc


@pytest.fixture
def database_name(mongo_client: MongoClient[Doc]) -> Iterator[str]:
    """A fresh database name for one test; dropped afterwards."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    yield name
    mongo_client.drop_database(name)


@pytest.fixture
def db(mongo_client: MongoClient[Doc], database_name: str) -> Database[Doc]:
    """The test's database, as the application sees it."""
    return mongo_client[database_name]


EngineFactory = Callable[..., ReactiveTasks]


@pytest.fixture
def make_engine(mongo_uri: str, database_name: str) -> Iterator[EngineFactory]:
    """Build ``ReactiveTasks`` on the test database; every one is stopped afterwards."""
    engines: list[ReactiveTasks] = []

    def make(**options: Any) -> ReactiveTasks:
        engine = ReactiveTasks(**{"uri": mongo_uri, "database": database_name, **FAST, **options})
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop(timeout=10)
