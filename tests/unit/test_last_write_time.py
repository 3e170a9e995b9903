"""``store.server.last_write_time``: the primary's last write, else the cluster time (a
mongos), else a ping's operation time (pure logic over canned replies)."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Timestamp

from mongoreact.store.server import last_write_time

LAST_WRITE = Timestamp(100, 1)
CLUSTER = Timestamp(200, 2)
OPERATION = Timestamp(300, 3)


class Admin:
    def __init__(self, hello: dict[str, Any]) -> None:
        self.replies = {"hello": hello, "ping": {"ok": 1, "operationTime": OPERATION}}

    def command(self, name: str) -> dict[str, Any]:
        return self.replies[name]


class Database:
    def __init__(self, hello: dict[str, Any]) -> None:
        self.client = type("Client", (), {"admin": Admin(hello)})()


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        ({"lastWrite": {"opTime": {"ts": LAST_WRITE}}, "$clusterTime": {"clusterTime": CLUSTER}},
         LAST_WRITE),
        ({"$clusterTime": {"clusterTime": CLUSTER}}, CLUSTER),  # a mongos
        ({"ok": 1}, OPERATION),
    ],
)  # fmt: skip
def test_last_write_time_falls_back_in_order(hello: dict[str, Any], expected: Timestamp) -> None:
    assert last_write_time(Database(hello)) == expected  # type: ignore[arg-type]
