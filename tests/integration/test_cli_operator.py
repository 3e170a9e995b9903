"""The operator's command line in real processes: the standalone dashboard's
authentication and hosts, the control verbs, the audit log, and secrets kept out of
what the commands print (docs/production.md, "Security")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until

SECRET = "p@ss:w0rd"  # an unescaped "@" and ":": masked whole
URI_WITH_SECRETS = f"mongodb://ops:{SECRET}@127.0.0.1:1/app?tlsCertificateKeyFilePassword=kp99"


def mongoreact(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mongoreact", *argv], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip


def fail(ctx: object) -> None:
    raise RuntimeError("boom")


@pytest.fixture
def cluster(make_engine: EngineFactory, db: Database[Doc], mongo_uri: str) -> list[str]:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=fail, debounce=0,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    engine.cron_task("nightly", "CRON 0 3 * * *", lambda: None)
    start(engine, db)
    db.orders.insert_many([{"_id": "o1"}, {"_id": "o2"}, {"_id": "o3"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "failed"}) == 3)
    return ["--uri", mongo_uri, "--database", db.name]


@pytest.fixture
def dashboard(cluster: list[str]) -> Iterator[Any]:
    """``mongoreact dashboard`` with a bearer token from the environment; yields a
    function making requests to it."""
    env = {**os.environ, "MONGOREACT_DASHBOARD_TOKEN": "t0k3n"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mongoreact", "dashboard", *cluster, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match and "authentication required" in line, line
        base = f"http://127.0.0.1:{match.group(1)}"

        def request(
            path: str, body: Any = None, headers: dict[str, str] | None = None
        ) -> tuple[int, Any]:
            data = json.dumps(body).encode() if body is not None else None
            sent = {"Content-Type": "application/json", **(headers or {})}
            req = urllib.request.Request(base + path, data=data, headers=sent)
            try:
                with urllib.request.urlopen(req, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        yield request
    finally:
        server.terminate()
        server.wait(10)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_the_standalone_dashboard_authenticates_checks_hosts_and_audits(
    dashboard: Any, cluster: list[str], db: Database[Doc]
) -> None:
    token = {"Authorization": "Bearer t0k3n"}
    assert dashboard("/api/overview")[0] == 401
    assert dashboard("/api/overview", headers={"Authorization": "Bearer nope"})[0] == 401
    assert dashboard("/api/overview", headers={**token, "Host": "evil.example"})[0] == 403
    status, overview = dashboard("/api/overview", headers=token)
    assert status == 200 and overview["user"] == "token" and overview["readOnly"] is False
    status, answer = dashboard("/api/retry", {}, headers=token)
    assert status == 400 and '"all": true' in answer["error"]
    assert dashboard("/api/retry", {"task": "sync", "docIds": ["o1"]}, headers=token) == (
        200, {"modified": 1}
    )  # fmt: skip
    done = mongoreact("audit", *cluster)
    assert done.returncode == 0, done.stderr
    assert re.search(r"token \(operator, dashboard\)\s+retry\s+1 record\(s\)", done.stdout)


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_auth(
    cluster: list[str],
) -> None:
    env = {"MONGOREACT_DASHBOARD_TOKEN": "", "MONGOREACT_DASHBOARD_PASSWORD": ""}
    done = mongoreact("dashboard", *cluster, "--host", "0.0.0.0", "--port", "0", env=env)
    assert done.returncode == 2 and "no authentication is set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dashboard", "--uri", "notauri", "--database", "d"], "bad URI"),
        (["dashboard", "--port", "99999", "--uri", "mongodb://h/d"], "not a port number"),
        (["dashboard", "--uri", "mongodb://h/d", "--users-file", "/nonexistent"], "cannot read"),
        (["tasks", "count", "--uri", "mongodb://h:99999/d"], "bad URI"),
        (["tasks", "count", "--uri", URI_WITH_SECRETS], "bad URI"),  # the "@" is not escaped
        (["tasks", "count", "--uri", URI_WITH_SECRETS.replace(SECRET, "pw0rd")], "cannot reach"),
        (["tasks", "retry", "--uri", "mongodb://127.0.0.1:1/d"], "needs a scope"),
        (["run", "some.module", "--metrics-port", "99999"], "not a port number"),
        (["server", "--port", "-3"], "not a port number"),
    ],
)
def test_mistakes_get_one_line_and_no_secret(argv: list[str], message: str) -> None:
    done = mongoreact(*argv)
    output = done.stdout + done.stderr
    assert done.returncode in (2, 3) and message in output, output
    assert "Traceback" not in output
    assert SECRET not in output and "kp99" not in output and "w0rd" not in output
    if any("kp99" in arg for arg in argv):
        assert "MONGOREACT_URI instead" in output  # a secret in argv is visible in ps


def test_control_verbs_in_real_processes(cluster: list[str], db: Database[Doc]) -> None:
    def ok(*argv: str) -> str:
        done = mongoreact(*argv, *cluster)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "deferred 1 record(s)" in ok("tasks", "defer", "--task", "sync", "--doc-id", "o1",
                                        "--delay", "1h")  # fmt: skip
    assert (db.orders_tasks.find_one({"sourceDocId": "o1"}) or {}).get("status") == "pending"
    assert "paused sync" in ok("tasks", "pause", "--task", "sync", "--for", "10m")
    assert "resumed sync" in ok("tasks", "resume", "--task", "sync")
    assert "would discard 2 task(s)" in ok("tasks", "discard", "--task", "sync", "--dry-run")
    refused = mongoreact("tasks", "discard", "--status", "pending", *cluster)
    assert refused.returncode == 2 and "deletes failed records" in refused.stderr
    bad_id = mongoreact("tasks", "show", "--task", "sync", "--doc-id", '{"$oid": "zz"}', *cluster)
    assert bad_id.returncode == 2 and "not Extended JSON" in bad_id.stderr
    assert "Traceback" not in bad_id.stderr
    assert "discarded 2 task(s)" in ok("tasks", "discard", "--all")
    assert db.orders_tasks.count_documents({"status": "failed"}) == 0
    assert "nightly" in ok("cron", "list")
    assert "asked nightly to run" in ok("cron", "run", "nightly")
    audit = ok("audit", "--json").splitlines()
    actions = [json.loads(line)["action"] for line in audit]
    assert actions == ["run cron task", "discard", "resume", "pause", "defer"]
    assert {json.loads(line)["via"] for line in audit} == {"cli"}
    done = mongoreact("tasks", "defer", "--task", "sync", "--doc-id", '{"$ne": 1}',
                      "--delay", "1h", *cluster)  # fmt: skip
    assert done.returncode == 2 and "not a document id" in done.stderr


def test_mongoreact_server_serves_until_sigterm() -> None:
    import signal

    from pymongo import MongoClient

    server = subprocess.Popen(
        [sys.executable, "-m", "mongoreact", "server", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"(mongodb://\S+)", line)
        assert match, line
        client: MongoClient[dict[str, Any]] = MongoClient(match.group(1))
        assert client.admin.command("ping")["ok"] == 1
        client.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_retry_leaves_completed_records_alone_unless_asked(
    make_engine: EngineFactory, db: Database[Doc], mongo_uri: str
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=lambda ctx: None, debounce=0)
    start(engine, db)
    db.orders.insert_many([{"_id": "c1"}, {"_id": "c2"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "completed"}) == 2)
    engine.stop()
    connection = ["--uri", mongo_uri, "--database", db.name]
    done = mongoreact("tasks", "retry", "--all", *connection)
    assert done.returncode == 0 and "retried 0 task(s)" in done.stdout, done.stderr
    done = mongoreact("tasks", "retry", "--all", "--include-completed", "--dry-run", *connection)
    assert "would retry 2 task(s)" in done.stdout, done.stderr


def test_refused_credentials_are_named_as_such(mongo_uri: str) -> None:
    """Regression: an authentication failure was reported as "cannot reach MongoDB"."""
    wrong = mongo_uri.replace("mongodb://", "mongodb://nobody:wr0ng-pw@")
    done = mongoreact("tasks", "count", "--database", "d", env={"MONGOREACT_URI": wrong})
    assert done.returncode == 3 and "refused the credentials" in done.stderr, done.stderr
    assert "wr0ng-pw" not in done.stderr and "Traceback" not in done.stderr
