"""Fixtures for the fault scenarios: a fresh database and app processes cleaned up."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from .harness import SUMMARY, AppProcess, Doc


@pytest.fixture
def fault_db(mongo_client: MongoClient[Doc]) -> Iterator[Database[Doc]]:
    name = f"fault_{uuid.uuid4().hex[:10]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


AppFactory = Callable[..., AppProcess]


@pytest.fixture
def apps() -> Iterator[list[AppProcess]]:
    """App processes a test starts; all are killed at the end."""
    started: list[AppProcess] = []
    yield started
    for app in started:
        app.kill()
        app.log.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per fault scenario: runs, lost, duplicates, recovery time."""
    if SUMMARY:
        terminalreporter.section("fault scenarios")
        for line in SUMMARY:
            terminalreporter.write_line(line)
