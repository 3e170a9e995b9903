"""EmbeddedServer: start, URI, stop, failure reporting."""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from mongoreact.testing import EmbeddedServer, EmbeddedServerError


def test_the_server_starts_prints_a_replica_set_uri_and_stops() -> None:
    server = EmbeddedServer(replica_set="unit")
    with server:
        assert server.uri.startswith("mongodb://127.0.0.1:")
        assert server.uri.endswith("replicaSet=unit")
        client: MongoClient[dict[str, object]] = MongoClient(server.uri)
        with client:
            assert client.admin.command("ping")["ok"] == 1
        pid = server.pid
        assert pid is not None
    with pytest.raises(EmbeddedServerError):
        _ = server.uri


def test_a_server_that_cannot_start_reports_its_error() -> None:
    with pytest.raises(EmbeddedServerError, match="history-size"):
        EmbeddedServer(history_size=0).start()


def test_a_mongoeco_of_another_version_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 27): the server ran on whichever mongoeco it found."""
    import importlib.metadata
    import importlib.util
    import sys

    from mongoreact.testing import _interpreter

    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    assert not _interpreter._hosts_server()
    assert "mongoeco 9.9.9 is installed here" in caplog.text
    monkeypatch.setattr(importlib.metadata, "version", lambda name: _interpreter.MONGOECO_VERSION)
    assert _interpreter._hosts_server()
