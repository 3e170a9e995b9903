"""The dashboard's JSON API and its guards, called as a WSGI application."""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any
from urllib.parse import urlencode

import pytest
from bson import json_util
from pymongo.database import Database

from mongoreact import ReactiveTasks, TaskContext

from .conftest import EngineFactory
from .helpers import Doc, record, start, wait_until


def call(app: Any, method: str, path: str, query: dict[str, Any] | None = None,
         body: Any = None, headers: dict[str, str] | None = None) -> tuple[str, Any]:  # fmt: skip
    """A request as the dashboard's page sends it (JSON bodies), plus ``headers``."""
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": urlencode(query or {}),
        "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
        "HTTP_HOST": "localhost:8080",
        **({"CONTENT_TYPE": "application/json"} if method == "POST" else {}),
        **(headers or {}),
    }  # fmt: skip
    status: list[str] = []
    chunks = app(environ, lambda s, headers: status.append(s))
    payload = b"".join(chunks)
    if path == "/":
        return status[0], payload.decode()
    return status[0], json_util.loads(payload)


def broken(ctx: TaskContext) -> None:
    if ctx.doc_id.startswith("bad"):
        raise ConnectionError("partner API down")


@pytest.fixture
def engine(make_engine: EngineFactory, db: Database[Doc]) -> ReactiveTasks:
    engine = make_engine(instance_id="web", monitoring={"push_interval": "200ms"})
    engine.register(task="sync", collection="orders", handler=broken, debounce=0,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    db.orders.insert_many([{"_id": "bad1", "vip": True}, {"_id": "bad2"}, {"_id": "ok"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": {"$in": ["failed", "completed"]}})
               == 3)  # fmt: skip
    return engine


def test_page_overview_list_and_detail(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app()
    status, page = call(app, "GET", "/")
    assert status == "200 OK" and '<table id="task-list">' in page
    status, overview = call(app, "GET", "/api/overview")
    counts = {"failed": 2, "completed": 1}
    expected = {"task": "sync", "collection": "orders", "counts": counts, "lagSeconds": 0.0,
                "pausedUntil": None}  # fmt: skip
    assert overview["tasks"] == [expected]
    assert overview["leader"]["instanceId"] == "web"
    wait_until(lambda: call(app, "GET", "/api/overview")[1]["instances"] == ["web"])
    status, listed = call(app, "GET", "/api/tasks", {"status": "failed", "sort": "sourceDocId"})
    assert listed["total"] == 2 and [r["sourceDocId"] for r in listed["items"]] == ["bad1", "bad2"]
    assert "lastObservedValues" not in listed["items"][0]
    _, vip = call(app, "GET", "/api/tasks", {"sourceFilter": '{"vip": true}'})
    assert vip["total"] == 1
    status, detail = call(app, "GET", "/api/task", {"task": "sync", "docId": '"bad1"'})
    assert detail["lastObservedValues"] == {"_id": "bad1", "vip": True}
    assert "ConnectionError: partner API down" in detail["lastErrorTraceback"]


def test_retry_one_selected_or_matching_and_defer(engine: ReactiveTasks, db: Database[Doc]) -> None:
    app = engine.dashboard_app()
    status, result = call(app, "POST", "/api/retry", body={"task": "sync", "docIds": ["bad1"]})
    assert (status, result) == ("200 OK", {"modified": 1})
    wait_until(lambda: record(db, "orders", "bad1")["status"] == "failed"
               and record(db, "orders", "bad1")["attempts"] == 1
               and len(record(db, "orders", "bad1")["executionHistory"]) == 2)  # fmt: skip
    _, result = call(app, "POST", "/api/defer", body={"task": "sync", "docId": "bad2",
                                                       "delay": "1h"})  # fmt: skip
    assert result == {"modified": 1}
    assert record(db, "orders", "bad2")["status"] == "pending"
    _, result = call(app, "POST", "/api/retry", body={"filter": {"status": "failed"}})
    assert result == {"modified": 1}  # bad1 again; bad2 is deferred (pending)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"sourceFilter": '{"$where": "sleep(1000)"}'}, "$where runs code on the server"),
        ({"sourceFilter": '{"x": {"$function": {}}}'}, "$function"),
        ({"sourceFilter": "{nope"}, "not Extended JSON"),
        ({"status": "exploded"}, "status="),
        ({"task": "unknown"}, "no instance has registered"),
        ({"limit": "9999"}, "limit="),
        ({"error": "(", "errorRegex": "1"}, "not a regular expression"),
    ],
)
def test_browser_input_is_validated(engine: ReactiveTasks, query: dict[str, str],
                                    fragment: str) -> None:  # fmt: skip
    status, payload = call(engine.dashboard_app(), "GET", "/api/tasks", query)
    assert status == "400 Bad Request" and fragment in payload["error"]


def test_read_only_and_auth(engine: ReactiveTasks) -> None:
    read_only = engine.dashboard_app(read_only=True)
    assert call(read_only, "GET", "/api/overview")[1]["readOnly"] is True
    status, _ = call(read_only, "POST", "/api/retry", body={"all": True})
    assert status == "403 Forbidden"
    guarded = engine.dashboard_app(auth=lambda environ: environ.get("HTTP_X_TOKEN") == "s3cret")
    assert call(guarded, "GET", "/api/overview")[0] == "401 Unauthorized"
    assert call(guarded, "GET", "/")[0] == "401 Unauthorized"
    assert call(guarded, "GET", "/", headers={"HTTP_X_TOKEN": "s3cret"})[0] == "200 OK"
    assert call(engine.dashboard_app(), "GET", "/nope")[0] == "404 Not Found"


# Cross-site request forgery: a page on another site must not be able to act.
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"CONTENT_TYPE": "text/plain"}, "415 Unsupported Media Type"),
        ({"CONTENT_TYPE": "application/x-www-form-urlencoded"}, "415 Unsupported Media Type"),
        ({"HTTP_ORIGIN": "https://evil.example"}, "403 Forbidden"),
        ({"HTTP_ORIGIN": "null"}, "403 Forbidden"),
        ({"HTTP_REFERER": "https://evil.example/page"}, "403 Forbidden"),
        ({"HTTP_SEC_FETCH_SITE": "cross-site"}, "403 Forbidden"),
        ({"HTTP_SEC_FETCH_SITE": "same-site"}, "403 Forbidden"),
    ],
)
def test_cross_site_actions_are_refused(
    engine: ReactiveTasks, db: Database[Doc], headers: dict[str, str], status: str
) -> None:
    app = engine.dashboard_app()
    answer = call(app, "POST", "/api/retry", body={"all": True}, headers=headers)
    assert answer[0] == status
    assert db.orders_tasks.count_documents({"status": "pending"}) == 0  # nothing re-queued


def test_same_origin_actions_pass(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app(allowed_hosts=["localhost", "ops.example"])
    same = {"HTTP_ORIGIN": "http://localhost:8080", "HTTP_SEC_FETCH_SITE": "same-origin"}
    body = {"task": "sync", "docIds": ["bad1"]}
    assert call(app, "POST", "/api/retry", body=body, headers=same) == ("200 OK", {"modified": 1})
    proxied = {"HTTP_ORIGIN": "https://ops.example", "HTTP_X_FORWARDED_HOST": "ops.example"}
    body = {"task": "sync", "docIds": ["bad2"]}
    answer = call(app, "POST", "/api/retry", body=body, headers=proxied)
    assert answer == ("200 OK", {"modified": 1})


def test_the_page_names_its_mount_point(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app()
    assert '<base href="/tasks/">' in call(app, "GET", "/", headers={"SCRIPT_NAME": "/tasks"})[1]
    assert '<base href="/">' in call(app, "GET", "/")[1]
    assert '<base href="/a%22b/">' in call(app, "GET", "/", headers={"SCRIPT_NAME": '/a"b/'})[1]
    assert '"/api/' not in call(app, "GET", "/")[1]  # relative URLs only


def test_retry_all_matching_leaves_completed_records_alone_unless_asked(
    engine: ReactiveTasks, db: Database[Doc]
) -> None:
    app = engine.dashboard_app()
    # The confirmation asks first: how many would run again.
    assert call(app, "POST", "/api/retry", body={"all": True, "dryRun": True}) == (
        "200 OK", {"matched": 2}
    )  # fmt: skip
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2  # nothing changed
    assert call(app, "POST", "/api/retry", body={"all": True})[1] == {"modified": 2}
    assert record(db, "orders", "ok")["status"] == "completed"  # not re-queued
    wait_until(lambda: db.orders_tasks.count_documents({"status": "failed"}) == 2)
    everything = {"all": True, "includeCompleted": True, "dryRun": True}
    assert call(app, "POST", "/api/retry", body=everything)[1] == {"matched": 3}


def test_discard_deletes_only_failed_records(engine: ReactiveTasks, db: Database[Doc]) -> None:
    app = engine.dashboard_app()
    body: dict[str, Any] = {"task": "sync", "docIds": ["bad1", "ok"]}
    assert call(app, "POST", "/api/discard", body={**body, "dryRun": True})[1] == {"matched": 1}
    assert call(app, "POST", "/api/discard", body=body)[1] == {"modified": 1}
    assert sorted(d["sourceDocId"] for d in db.orders_tasks.find()) == ["bad2", "ok"]
    assert call(app, "POST", "/api/discard", body={"all": True})[1] == {"modified": 1}
    assert [d["sourceDocId"] for d in db.orders_tasks.find()] == ["ok"]


def test_pause_and_resume_a_task_type_cluster_wide(
    engine: ReactiveTasks, db: Database[Doc]
) -> None:
    app = engine.dashboard_app()
    assert call(app, "POST", "/api/pause", body={"task": "sync", "delay": "1h"})[0] == "200 OK"
    assert call(app, "GET", "/api/overview")[1]["tasks"][0]["pausedUntil"] is not None
    threading.Event().wait(1.2)  # instances read cluster pauses once a second
    db.orders.insert_one({"_id": "later"})
    wait_until(lambda: record(db, "orders", "later") is not None)
    threading.Event().wait(0.5)
    assert record(db, "orders", "later")["status"] == "pending"  # not claimed while paused
    assert call(app, "POST", "/api/resume", body={"task": "sync"})[0] == "200 OK"
    assert call(app, "GET", "/api/overview")[1]["tasks"][0]["pausedUntil"] is None
    wait_until(lambda: record(db, "orders", "later")["status"] == "completed", timeout=15)
    assert call(app, "POST", "/api/pause", body={"task": "nope", "delay": "1h"})[0].startswith(
        "400"
    )


def test_the_instances_panel_says_who_runs_what(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app()

    def beaten_after_the_runs() -> Any:
        overview = call(app, "GET", "/api/overview")[1]
        details = overview["instanceDetails"]
        return details and details[0]["facts"]["totals"]["failed"] == 2 and overview

    overview = wait_until(beaten_after_the_runs, message="a heartbeat after the runs")
    (web,) = overview["instanceDetails"]
    facts = web["facts"]
    assert web["instanceId"] == "web" and facts["leader"] is True
    assert facts["pid"] == os.getpid() and facts["host"] and facts["concurrency"] == 5
    assert facts["totals"] == {"finished": 1, "failed": 2}
    assert sum(m["finished"] + m["failed"] for m in overview["perMinute"]) == 3
