"""``mongoreact run MODULE[:ATTRIBUTE]`` in real processes: it runs the module's tasks,
serves metrics and health, stops on SIGTERM within its timeout, and fails with one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from mongoreact.monitoring.http import ProbeApp

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until

FAST = "poll_min=20, poll_max=200, batch_window=10, leader_heartbeat=200, leader_ttl=1000"

DEFAULT_INSTANCE_MODULE = f"""
import threading
import mongoreact

mongoreact.init({FAST})  # the URI and database come from the command line

@mongoreact.task(collection="orders", filter={{"status": "paid"}}, debounce=0)
def sync_order(ctx):
    order = ctx.get_document()
    if order.get("slow"):
        mongoreact.instance().database["started"].insert_one({{"_id": order["_id"]}})
        threading.Event().wait(30)
    mongoreact.instance().database["synced"].insert_one({{"_id": order["_id"]}})
"""

NAMED_INSTANCE_MODULE = f"""
import os
from mongoreact import ReactiveTasks

app = ReactiveTasks(uri=os.environ["APP_URI"], database=os.environ["APP_DB"], {FAST})

@app.task(collection="orders", debounce=0)
def sync_order(ctx):
    app.database["synced"].insert_one({{"_id": ctx.doc_id}})
"""


class Worker:
    """A ``mongoreact run`` process whose stderr goes to a file."""

    def __init__(self, directory: Path, *argv: str, env: dict[str, str] | None = None) -> None:
        self.log = directory / "worker.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mongoreact", "run", *argv],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=self._log_file, env=env,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def port(self) -> int:
        pattern = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
        wait_until(lambda: pattern.search(self.text()), timeout=20, message="metrics served")
        found = pattern.search(self.text())
        assert found is not None
        return int(found.group(1))

    def stop(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_worker_runs_the_module_tasks_serves_health_and_stops_on_sigterm(
    tmp_path: Path, mongo_uri: str, db: Database[Doc], workers: list[Worker]
) -> None:
    (tmp_path / "shop_tasks.py").write_text(textwrap.dedent(DEFAULT_INSTANCE_MODULE))
    worker = Worker(
        tmp_path, "shop_tasks", "--uri", mongo_uri, "--database", db.name,
        "--metrics-port", "0", "--metrics-host", "127.0.0.1", "--stop-timeout", "10",
    )  # fmt: skip
    workers.append(worker)
    port = worker.port()
    db.orders.insert_many([{"_id": "o1", "status": "paid"}, {"_id": "o2", "status": "new"}])
    wait_until(lambda: db.synced.count_documents({}) == 1, timeout=20, message="the task to run")

    status, body = get(port, "/health")
    health = json.loads(body)
    assert status == 200 and health["healthy"] and health["running"]
    assert any(name.startswith("mongoreact-dispatch-") for name in health["threads"])
    status, body = get(port, "/metrics")
    assert status == 200
    assert (
        b'reactive_tasks_duration_seconds_count{status="completed",task_name="sync_order"} 1.0'
        in body
    )

    started = time.monotonic()
    assert worker.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    log = worker.text()
    assert "Traceback" not in log
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO +mongoreact\.signals: SIGTERM", log, re.M
    )
    assert "stopped (clean: True)" in log
    assert db.synced.count_documents({}) == 1  # o2 is not paid


def test_a_named_instance_takes_the_command_line_options(
    tmp_path: Path, mongo_uri: str, db: Database[Doc], workers: list[Worker]
) -> None:
    (tmp_path / "named.py").write_text(textwrap.dedent(NAMED_INSTANCE_MODULE))
    env = {**os.environ, "APP_URI": mongo_uri, "APP_DB": db.name}
    worker = Worker(
        tmp_path, "named:app", "--instance-id", "worker-7", "--metrics-port", "0",
        "--metrics-host", "127.0.0.1", env=env,
    )  # fmt: skip
    workers.append(worker)
    port = worker.port()
    db.orders.insert_one({"_id": "o1"})
    wait_until(lambda: db.synced.count_documents({}) == 1, timeout=20, message="the task to run")
    assert json.loads(get(port, "/health")[1])["instanceId"] == "worker-7"
    assert worker.stop(timeout=20) == 0


def test_sigterm_waits_for_running_handlers_only_up_to_the_stop_timeout(
    tmp_path: Path, mongo_uri: str, db: Database[Doc], workers: list[Worker]
) -> None:
    (tmp_path / "shop_tasks.py").write_text(textwrap.dedent(DEFAULT_INSTANCE_MODULE))
    # The URI from the environment, as a default for a module that names none.
    worker = Worker(
        tmp_path, "shop_tasks", "--database", db.name,
        "--stop-timeout", "1", "--metrics-port", "0", "--metrics-host", "127.0.0.1",
        env={**os.environ, "MONGOREACT_URI": mongo_uri},
    )  # fmt: skip
    workers.append(worker)
    worker.port()
    db.orders.insert_one({"_id": "slow", "status": "paid", "slow": True})
    # The handler itself says it runs: a claimed record may still wait in the buffer,
    # and a stop then releases it cleanly.
    wait_until(
        lambda: db.started.count_documents({}) == 1, timeout=20, message="the slow run to start"
    )
    started = time.monotonic()
    assert worker.stop(timeout=20) == 1  # not clean: a handler was still running
    assert time.monotonic() - started < 8
    assert "handlers were still running after 1s" in worker.text()


@pytest.mark.parametrize(
    ("module", "argv", "code", "message"),
    [
        ("", ["missing_module"], 2, "could not import missing_module: ModuleNotFoundError"),
        ("raise RuntimeError('no config')", ["broken"], 2,
         "could not import broken: RuntimeError: no config"),
        (DEFAULT_INSTANCE_MODULE, ["shop_tasks", "--concurrency", "-1"], 2, "concurrency=-1"),
        ("x = 1", ["plain:x"], 2, "plain:x is a int, not a ReactiveTasks"),
        ("import mongoreact", ["empty"], 2, "empty registers no task on the default instance"),
        (DEFAULT_INSTANCE_MODULE,
         ["shop_tasks", "--uri", "mongodb://127.0.0.1:1/x", "--connect-timeout", "1"], 3,
         "cannot reach MongoDB at mongodb://127.0.0.1:1/x within 1s"),
    ],
)  # fmt: skip
def test_failures_are_one_line_and_a_non_zero_exit(
    tmp_path: Path, mongo_uri: str, module: str, argv: list[str], code: int, message: str
) -> None:
    name = argv[0].partition(":")[0]
    if module:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(module))
    if "--uri" not in argv:
        argv = [*argv, "--uri", mongo_uri, "--database", "unused"]
    done = subprocess.run(
        [sys.executable, "-m", "mongoreact", "run", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("mongoreact:")]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and message in errors[0], done.stderr


def test_health_is_503_unless_the_instance_runs(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="t", collection="jobs", handler=lambda ctx: None)
    app = ProbeApp(engine)
    assert _call(app, "/health")[0].startswith("503")
    start(engine, db)
    status, body = _call(app, "/health")
    assert status.startswith("200") and json.loads(body)["healthy"]
    engine.stop()
    assert _call(app, "/health")[0].startswith("503")
    assert _call(app, "/nothing")[0].startswith("404")


def _call(app: ProbeApp, path: str) -> tuple[str, bytes]:
    answer: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        answer.append(status)
        return lambda data: None

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return answer[0], body


def test_an_unreachable_server_is_reported_and_a_sigterm_during_the_start_exits_at_once(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """Regression: ``mongoreact run`` was silent for 30 s, ignored SIGTERM meanwhile,
    then printed pymongo's error."""
    (tmp_path / "shop_tasks.py").write_text(textwrap.dedent(DEFAULT_INSTANCE_MODULE))
    worker = Worker(tmp_path, "shop_tasks", "--uri", "mongodb://ops:s3cr3t@127.0.0.1:1/x")
    workers.append(worker)
    wait_until(lambda: "connecting to MongoDB at" in worker.text(), timeout=20)
    wait_until(lambda: "still waiting for MongoDB" in worker.text(), timeout=20)
    started = time.monotonic()
    assert worker.stop(timeout=10) == 0
    assert time.monotonic() - started < 3
    log = worker.text()
    assert "SIGTERM: cancelling the start" in log and "Traceback" not in log
    assert "s3cr3t" not in log and "mongodb://ops:***@127.0.0.1:1/x" in log


FLASK_APP_MODULE = """
    from flask import Flask
    from mongoreact.contrib.flask import Mongoreact

    ext = Mongoreact()

    @ext.task(collection="orders")
    def sync_order(ctx):
        pass

    def create_app():
        app = Flask(__name__)
        app.config["MONGOREACT"] = {"uri": "mongodb://127.0.0.1:1/shop"}
        ext.init_app(app)
        return app

    app = create_app()
"""


@pytest.mark.parametrize("target", ["flask_shop", "flask_shop:ext", "flask_shop:app",
                                    "flask_shop:create_app"])  # fmt: skip
def test_flask_targets_run_as_docs_flask_md_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Regression: the extension got "is a Mongoreact, not a ReactiveTasks", the app
    factory "is a Flask"."""
    from mongoreact import api
    from mongoreact.cli_run import _load

    (tmp_path / "flask_shop.py").write_text(textwrap.dedent(FLASK_APP_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    # As in the command's own process: no default instance left by another test.
    monkeypatch.setattr(api, "_default", None)
    instance = _load(target)
    assert [d.name for d in instance.definitions] == ["sync_order"]


JSON_LOG_MODULE = f"""
import logging
import mongoreact

mongoreact.init({FAST})
log = logging.getLogger("shop")

@mongoreact.task(collection="orders", debounce=0,
                 retry_policy={{"type": "fixed", "interval": 1, "max_attempts": 1}})
def sync_order(ctx):
    log.info("syncing %s", ctx.doc_id)
    if ctx.doc_id == "bad":
        raise ValueError("ERP said no")
"""


def test_json_logs_carry_the_run_fields(
    tmp_path: Path, mongo_uri: str, db: Database[Doc], workers: list[Worker]
) -> None:
    (tmp_path / "json_tasks.py").write_text(textwrap.dedent(JSON_LOG_MODULE))
    worker = Worker(
        tmp_path, "json_tasks", "--uri", mongo_uri, "--database", db.name,
        "--log-format", "json", "--instance-id", "w-1",
    )  # fmt: skip
    workers.append(worker)
    db.orders.insert_many([{"_id": "ok"}, {"_id": "bad"}])
    wait_until(lambda: "giving up" in worker.text(), timeout=20, message="the failure logged")
    assert worker.stop(timeout=20) == 0
    lines = [json.loads(line) for line in worker.text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    handler_line = next(line for line in lines if line["message"] == "syncing ok")
    assert handler_line["logger"] == "shop"  # the handler's own log line
    assert (handler_line["task"], handler_line["doc_id"], handler_line["attempt"],
            handler_line["instance_id"]) == ("sync_order", "ok", 1, "w-1")  # fmt: skip
    gave_up = next(line for line in lines if "giving up" in line["message"])
    assert gave_up["level"] == "ERROR" and gave_up["doc_id"] == "bad"
    assert "ValueError: ERP said no" in gave_up["traceback"]
