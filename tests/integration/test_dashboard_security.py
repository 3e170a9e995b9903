"""The dashboard as an attacker or a careless operator meets it: foreign hosts, forged
origins, operator-shaped ids, actions without a scope, bad bodies, missing credentials,
a viewer trying to act; and what it keeps off the page (docs/production.md, "Security")."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId, json_util
from pymongo.database import Database

from mongoreact import ConfigError, ReactiveTasks
from mongoreact.dashboard import (
    BasicAuth,
    BearerAuth,
    Credential,
    DashboardUser,
    Redaction,
    auth_from,
    read_credentials,
)

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until
from .test_dashboard import broken, call


@pytest.fixture
def engine(make_engine: EngineFactory, db: Database[Doc]) -> ReactiveTasks:
    engine = make_engine(instance_id="web")
    engine.register(task="sync", collection="orders", handler=broken, debounce=0,
                    watch_projection={"email": 1, "total": 1},
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    db.orders.insert_many(
        [{"_id": "bad1", "email": "ann@example.com", "total": 3}, {"_id": "bad2"}, {"_id": "ok"}]
    )
    wait_until(lambda: db.orders_tasks.count_documents({"status": {"$in": ["failed", "completed"]}})
               == 3)  # fmt: skip
    return engine


def raw_call(app: Any, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    answer: list[Any] = []
    body = b"".join(app(environ, lambda status, headers: answer.extend([status, headers])))
    return answer[0], dict(answer[1]), body


# Operator injection through ids: equality only, operator-shaped ids refused.
@pytest.mark.parametrize(
    "doc_id", [{"$gt": ""}, {"$ne": None}, {"$regex": "."}, [1, 2], {"a": {"$gt": 1}}]
)
def test_operator_shaped_ids_are_refused_everywhere(
    engine: ReactiveTasks, db: Database[Doc], doc_id: Any
) -> None:
    app = engine.dashboard_app()
    text = json_util.dumps(doc_id)
    status, payload = call(app, "GET", "/api/task", {"task": "sync", "docId": text})
    assert status == "400 Bad Request" and "not a document id" in payload["error"]
    for path, body in (
        ("/api/defer", {"task": "sync", "docId": doc_id, "delay": "1h"}),
        ("/api/retry", {"task": "sync", "docIds": [doc_id]}),
        ("/api/discard", {"task": "sync", "docIds": ["ok", doc_id]}),
    ):
        status, payload = call(app, "POST", path, body=body)
        assert status == "400 Bad Request", (path, payload)
    with pytest.raises(ConfigError, match="not a document id"):
        engine.get_task("sync", json_util.loads(text))
    with pytest.raises(ConfigError, match="not a document id"):
        engine.defer_task("sync", json_util.loads(text), dt_hour())
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2  # nothing touched
    assert db.orders_tasks.count_documents({"nextRunAt": {"$gt": engine.clock.now()}}) == 0


def dt_hour() -> Any:
    import datetime as dt

    return dt.timedelta(hours=1)


def test_real_ids_of_every_shape_still_match(engine: ReactiveTasks, db: Database[Doc]) -> None:
    oid = ObjectId()
    db.orders.insert_many([{"_id": oid}, {"_id": {"region": "eu", "n": 7}}, {"_id": 42}])
    wait_until(lambda: db.orders_tasks.count_documents({}) == 6)
    app = engine.dashboard_app()
    for doc_id in (oid, {"region": "eu", "n": 7}, 42, "bad1"):
        status, record = call(
            app, "GET", "/api/task", {"task": "sync", "docId": json_util.dumps(doc_id)}
        )
        assert status == "200 OK" and record["sourceDocId"] == doc_id


@pytest.mark.parametrize("body", [None, {}, {"filter": {}}, {"dryRun": True}, {"all": False}])
def test_an_action_without_a_scope_is_refused(
    engine: ReactiveTasks, db: Database[Doc], body: Any
) -> None:
    """Regression: an empty POST /api/retry re-queued every record of every task."""
    app = engine.dashboard_app()
    for path in ("/api/retry", "/api/discard"):
        status, payload = call(app, "POST", path, body=body)
        assert status == "400 Bad Request" and "all" in payload["error"]
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2
    assert call(app, "POST", "/api/retry", body={"task": "sync"})[1] == {"modified": 2}


# Hosts: DNS rebinding and foreign names, reads included.
@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_HOST": "evil.example"},
        {"HTTP_HOST": "evil.example:8080"},
        {"HTTP_HOST": "localhost.evil.example"},
        {"HTTP_HOST": "localhost:8080", "HTTP_X_FORWARDED_HOST": "evil.example"},
        {"HTTP_HOST": ""},
        {"HTTP_HOST": "[::1]evil.example"},
        {"HTTP_HOST": "localhost:8000@evil.example"},
        {"HTTP_HOST": "localhost", "HTTP_X_FORWARDED_HOST": "localhost:1:2"},
    ],
)
def test_foreign_hosts_are_refused_for_reads_and_actions(
    engine: ReactiveTasks, db: Database[Doc], headers: dict[str, str]
) -> None:
    app = engine.dashboard_app()
    for method, path, body in (
        ("GET", "/api/tasks", None),
        ("GET", "/api/task", None),
        ("POST", "/api/retry", {"task": "sync"}),
    ):
        query = {"task": "sync", "docId": '"bad1"'} if path == "/api/task" else None
        status, payload = call(app, method, path, query, body=body, headers=headers)
        assert status == "403 Forbidden" and "allowed host" in payload["error"], (path, payload)
    status, page = call(app, "GET", "/", headers=headers)
    assert status == "403 Forbidden" and "<table" not in page
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2


def test_allowed_hosts_follow_djangos_rules(engine: ReactiveTasks) -> None:
    default = engine.dashboard_app()
    for host in ("localhost", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST", "localhost."):
        assert call(default, "GET", "/api/overview", headers={"HTTP_HOST": host})[0] == "200 OK"
    domain = engine.dashboard_app(allowed_hosts=[".example.com"])
    for host, status in (
        ("example.com", "200 OK"),
        ("ops.example.com:443", "200 OK"),
        ("badexample.com", "403 Forbidden"),
        ("localhost", "403 Forbidden"),
    ):
        assert call(domain, "GET", "/api/overview", headers={"HTTP_HOST": host})[0] == status
    anything = engine.dashboard_app(allowed_hosts=["*"])
    assert call(anything, "GET", "/api/overview", headers={"HTTP_HOST": "x.y"})[0] == "200 OK"
    for bad in ("localhost", ["http://a/"], [""], [3]):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            engine.dashboard_app(allowed_hosts=bad)  # type: ignore[arg-type]


def test_every_answer_forbids_framing_and_sniffing(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app()
    for path in ("/", "/api/overview", "/nope"):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "HTTP_HOST": "localhost",
                   "wsgi.input": io.BytesIO()}  # fmt: skip
        _, headers, _ = raw_call(app, environ)
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("length", ["-1", "-99999", "abc"])
def test_a_bad_content_length_is_refused_without_reading(
    engine: ReactiveTasks, length: str
) -> None:
    class Endless(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body was read")

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/retry", "HTTP_HOST": "localhost",
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": length,
               "wsgi.input": Endless()}  # fmt: skip
    status, _, body = raw_call(engine.dashboard_app(), environ)
    assert status == "400 Bad Request" and b"Content-Length" in body


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/api/retry", {"filter": {"status": 123}}, "status"),
        ("/api/retry", {"filter": {"status": ["nope"]}}, "status"),
        ("/api/retry", {"filter": "x"}, "filter"),
        ("/api/retry", {"filter": {"sourceFilter": "[1]"}}, "sourceFilter"),
        ("/api/retry", {"filter": {"sourceFilter": '{"a": {"$frobnicate": 1}}'}}, "frobnicate"),
        ("/api/retry", {"filter": {"sourceFilter": '{"$where": "1"}'}}, "$where"),
        ("/api/retry", {"task": "sync", "dryRun": "yes"}, "dryRun"),
        ("/api/retry", {"task": 5}, "task"),
        ("/api/defer", {"task": "sync", "docId": "bad1", "delay": "99999999d"}, "100 years"),
        ("/api/defer", {"task": "sync", "docId": "bad1", "delay": "10"}, "unit"),
        ("/api/defer", {"task": "sync", "delay": "1h"}, "docId"),
        ("/api/pause", {"task": "sync", "delay": 10**30}, "100 years"),
        ("/api/pause", {"task": ["sync"], "delay": "1h"}, "task"),
        ("/api/cron/run", {"name": {"$ne": 1}}, "name"),
        ("/api/defer", {"task": "sync", "docId": {"$oid": "zz"}, "delay": "1h"}, "Extended JSON"),
        ("/api/retry", {"filter": {"sourceFilter": '{"_id": {"$oid": "zz"}}'}}, "Extended JSON"),
        ("/api/retry", {"filter": {"sourceFilter": '{"a": {"$numberDecimal": "x"}}'}}, "JSON"),
        ("/api/discard", {"filter": {"status": "pending"}}, "failed records"),
    ],
)
def test_bad_bodies_get_400_and_a_message_not_a_traceback(
    engine: ReactiveTasks, caplog: pytest.LogCaptureFixture, path: str, body: Any, fragment: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="mongoreact.dashboard"):
        status, payload = call(engine.dashboard_app(), "POST", path, body=body)
    assert status == "400 Bad Request" and fragment in payload["error"], payload
    assert not [r for r in caplog.records if r.name.startswith("mongoreact.dashboard")]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def test_viewers_read_operators_act_and_every_action_is_audited(
    engine: ReactiveTasks, db: Database[Doc]
) -> None:
    auth = BasicAuth([Credential("vic", "look", "viewer"), Credential("ops", "p@ss:word")])
    app = engine.dashboard_app(auth=auth)
    status, payload = call(app, "GET", "/api/overview")
    assert status == "401 Unauthorized"
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_HOST": "localhost",
               "wsgi.input": io.BytesIO()}  # fmt: skip
    assert raw_call(app, environ)[1]["WWW-Authenticate"].startswith("Basic")
    assert call(app, "GET", "/api/overview", headers=basic("ops", "wrong"))[0] == "401 Unauthorized"
    assert call(app, "GET", "/api/overview", headers=basic("vic", "p@ss:word"))[0] == (
        "401 Unauthorized"
    )
    status, overview = call(app, "GET", "/api/overview", headers=basic("vic", "look"))
    assert status == "200 OK" and overview["readOnly"] is True and overview["user"] == "vic"
    status, payload = call(
        app, "POST", "/api/retry", body={"task": "sync"}, headers=basic("vic", "look")
    )
    assert status == "403 Forbidden" and "viewer" in payload["error"]
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2
    ops = basic("ops", "p@ss:word")
    assert call(app, "GET", "/api/overview", headers=ops)[1]["readOnly"] is False
    assert call(app, "POST", "/api/retry", body={"task": "sync", "docIds": ["bad1"]},
                headers=ops)[1] == {"modified": 1}  # fmt: skip
    assert call(app, "POST", "/api/pause", body={"task": "sync", "delay": "1m"}, headers=ops)[
        0
    ] == ("200 OK")
    status, audit = call(app, "GET", "/api/audit", headers=basic("vic", "look"))
    assert status == "200 OK"
    pause, retry = audit["items"][:2]
    assert (pause["actor"], pause["role"], pause["action"], pause["via"]) == (
        "ops", "operator", "pause", "dashboard"
    )  # fmt: skip
    assert retry["action"] == "retry" and retry["count"] == 1 and "bad1" in retry["scope"]
    assert retry["at"] <= pause["at"]
    # The same log through the API, and a dry run or a refused action logs nothing.
    assert [e["action"] for e in engine.audit_log()] == ["pause", "retry"]


def test_bearer_tokens_and_auth_callables_naming_users(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app(auth=BearerAuth([Credential("ci", "t0ken", "viewer")]))
    assert call(app, "GET", "/api/overview")[0] == "401 Unauthorized"
    headers = {"HTTP_AUTHORIZATION": "Bearer t0ken"}
    assert call(app, "GET", "/api/overview", headers=headers)[1]["user"] == "ci"
    assert call(app, "POST", "/api/retry", body={"task": "sync"}, headers=headers)[0] == (
        "403 Forbidden"
    )
    named = engine.dashboard_app(auth=lambda environ: DashboardUser("sso:ann", "operator"))
    assert call(named, "GET", "/api/overview")[1]["user"] == "sso:ann"
    with pytest.raises(ConfigError, match="auth"):
        engine.dashboard_app(auth="secret")  # type: ignore[arg-type]


def test_credentials_come_from_files_or_the_environment(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# role:name:secret\nviewer:vic:look\noperator:ops:a:b:c\n")
    assert [(c.name, c.role, c.secret) for c in read_credentials(users)] == [
        ("vic", "viewer", "look"), ("ops", "operator", "a:b:c")
    ]  # fmt: skip
    assert "look" not in repr(read_credentials(users))
    (tmp_path / "bad").write_text("admin:ops:x\n")
    with pytest.raises(ConfigError, match="role:name:secret"):
        read_credentials(tmp_path / "bad")
    assert auth_from(environ={}) is None
    auth = auth_from(environ={"MONGOREACT_DASHBOARD_PASSWORD": "pw"})
    assert auth is not None and auth({**basic("admin", "pw")}) == DashboardUser("admin")
    both = auth_from(users_file=str(users), environ={"MONGOREACT_DASHBOARD_TOKEN": "tk"})
    assert both is not None
    assert both({"HTTP_AUTHORIZATION": "Bearer tk"}) == DashboardUser("token")
    assert both(basic("vic", "look")) == DashboardUser("vic", "viewer")
    assert not both(basic("vic", "tk"))


def test_redaction_keeps_chosen_fields_and_error_texts_off_the_page(
    engine: ReactiveTasks,
) -> None:
    app = engine.dashboard_app(redaction=Redaction(fields=["email"], errors=True))
    status, record = call(app, "GET", "/api/task", {"task": "sync", "docId": '"bad1"'})
    assert status == "200 OK"
    assert record["lastObservedValues"] == {"email": "[redacted]", "total": 3}
    assert record["lastError"] == "ConnectionError: [redacted]"
    assert "partner API" not in json_util.dumps(record)
    _, listed = call(app, "GET", "/api/tasks", {"status": "failed"})
    assert "partner API" not in json_util.dumps(listed)
    with pytest.raises(ConfigError, match="redact_fields"):
        Redaction(fields="email")


def test_the_uri_reaches_no_page_answer_metric_or_log(
    engine: ReactiveTasks, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the URI holds (a password, secret options), none of it is shown: the
    dashboard's answers and the metrics never include the URI, and the settings' repr
    masks it (tests/unit/test_configuration.py covers the masking itself)."""
    from prometheus_client import generate_latest

    uri = engine.settings.uri or ""
    host = uri.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    app = engine.dashboard_app()
    answers = [call(app, "GET", path)[1] for path in ("/", "/api/overview", "/api/cron")]
    answers.append(call(app, "GET", "/api/tasks", {"status": "failed"})[1])
    registry = engine.prometheus_registry()
    assert registry is not None
    shown = json_util.dumps(answers) + generate_latest(registry).decode() + caplog.text
    assert host and host not in shown and uri not in shown


@pytest.mark.parametrize(
    "query",
    [{"docId": '{"$oid": "zz"}'}, {"docId": '{"$date": 1e400}'}, {"docId": "[" * 3000}],
)
def test_malformed_extended_json_ids_get_400(engine: ReactiveTasks, query: dict[str, str]) -> None:
    status, payload = call(engine.dashboard_app(), "GET", "/api/task", {"task": "sync", **query})
    assert status == "400 Bad Request", payload


def test_a_discard_filtered_on_other_statuses_deletes_nothing(
    engine: ReactiveTasks, db: Database[Doc]
) -> None:
    """Regression: the statuses given were replaced by "failed", so a discard of
    pending records deleted every failed record of every task."""
    app = engine.dashboard_app()
    status, _ = call(app, "POST", "/api/discard", body={"filter": {"status": "pending"}})
    assert status == "400 Bad Request"
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2


def test_redacted_values_cannot_be_read_around_through_filters(engine: ReactiveTasks) -> None:
    app = engine.dashboard_app(redaction=Redaction(fields=["email"], errors=True))
    for query in (
        {"sourceFilter": '{"email": {"$regex": "^a"}}'},
        {"sourceFilter": '{"$or": [{"total": 3}, {"email": "ann@example.com"}]}'},
        {"sourceFilter": '{"$expr": {"$eq": ["$email", "x"]}}'},
        {"error": "partner"},
    ):
        status, payload = call(app, "GET", "/api/tasks", query)
        assert status == "400 Bad Request", (query, payload)
    assert call(app, "GET", "/api/tasks", {"sourceFilter": '{"total": 3}'})[0] == "200 OK"
    assert call(app, "POST", "/api/retry", body={"filter": {"error": "partner"}})[0] == (
        "400 Bad Request"
    )
    # The audit log does not repeat a scope that names them.
    engine.record_action("retry", scope={"source_doc_filter": {"email": "ann@x"}}, count=1,
                         actor="ops")  # fmt: skip
    entries = call(app, "GET", "/api/audit")[1]["items"]
    assert entries[0]["scope"] == "[redacted]"


def test_credentials_with_non_ascii_names_and_secrets(engine: ReactiveTasks) -> None:
    """Regression: hmac.compare_digest refused non-ASCII str (a 500 for "josé")."""
    app = engine.dashboard_app(auth=BasicAuth([Credential("josé", "pässwörd")]))
    token = base64.b64encode("josé:pässwörd".encode()).decode()
    headers = {"HTTP_AUTHORIZATION": f"Basic {token}"}
    assert call(app, "GET", "/api/overview", headers=headers)[1]["user"] == "josé"
    wrong = base64.b64encode("josé:nope".encode()).decode()
    refused = call(app, "GET", "/api/overview", headers={"HTTP_AUTHORIZATION": f"Basic {wrong}"})
    assert refused[0] == "401 Unauthorized"


def test_pages_are_bounded(engine: ReactiveTasks) -> None:
    status, payload = call(engine.dashboard_app(), "GET", "/api/tasks", {"skip": "1000000000"})
    assert status == "400 Bad Request" and "skip" in payload["error"]


def test_management_calls_from_scripts_are_audited_too(engine: ReactiveTasks) -> None:
    """Every change of records is logged, whichever way it comes: a script calling the
    management API is logged as its OS user, through "api"."""
    from mongoreact.audit import os_user

    assert engine.retry_tasks(task="sync", status="failed").modified_count == 2
    engine.pause_task("sync", "1m")
    with engine.acting_as("nightly-job", via="cron"):
        engine.resume_task("sync")
    assert engine.count_tasks(task="sync") == 3  # reads are not logged
    resume, pause, retry = engine.audit_log()[:3]
    assert (retry["action"], retry["actor"], retry["via"], retry["count"]) == (
        "retry", os_user(), "api", 2
    )  # fmt: skip
    assert '"task": "sync"' in retry["scope"] and '"failed"' in retry["scope"]
    assert (pause["action"], resume["action"], resume["actor"], resume["via"]) == (
        "pause", "resume", "nightly-job", "cron"
    )  # fmt: skip
