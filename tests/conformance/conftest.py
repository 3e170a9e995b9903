"""Fixtures for the conformance suite.

Each test states one MongoDB behaviour mongoreact relies on. The suite runs against the
embedded server, or unchanged against a real replica set when MONGOREACT_TEST_URI is set.
Tests that need the server's retention exhausted use their own small embedded server
either way (a real oplog cannot be exhausted from a test).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.change_stream import ChangeStream
from pymongo.database import Database

from mongoreact.testing import EmbeddedServer

Doc = dict[str, Any]


@pytest.fixture
def db(mongo_client: MongoClient[Doc]) -> Iterator[Database[Doc]]:
    """A fresh database for one test."""
    name = f"conf_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def small_history_server() -> Iterator[EmbeddedServer]:
    """An embedded server that retains only 50 change events."""
    with EmbeddedServer(history_size=50, cursor_timeout=1.0) as server:
        yield server


def connect(uri: str) -> MongoClient[Doc]:
    """A typed client for ``uri`` (use as a context manager)."""
    return MongoClient(uri, serverSelectionTimeoutMS=20_000)


def collect(stream: ChangeStream[Doc], count: int, timeout: float = 10.0) -> list[Doc]:
    """Read ``count`` events from ``stream`` or fail after ``timeout`` seconds."""
    events: list[Doc] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} events, got {len(events)}: {events}")
        event = stream.try_next()
        if event is not None:
            events.append(event)
    return events


def assert_no_more(stream: ChangeStream[Doc]) -> None:
    """The stream has nothing further right now (one await period)."""
    assert stream.try_next() is None


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        threading.Event().wait(0.02)  # poll interval inside the deadline
