"""Starting, stopping, the module-level API and several instances in one process."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

import mongoreact
from mongoreact import ConfigError, MongoReactError, NotStartedError, TaskContext

from .conftest import EngineFactory
from .helpers import FAST, Doc, Recorder, reconciled, record, start, wait_until


def test_module_api_runs_a_registered_task(
    mongo_uri: str, database_name: str, db: Database[Doc]
) -> None:
    # Given the module-level API with a task registered by the decorator
    runs: list[Any] = []
    mongoreact.init(uri=mongo_uri, database=database_name, **FAST)

    @mongoreact.task(task="welcome", collection="users", filter={"status": "active"}, debounce=0)
    def welcome(ctx: mongoreact.TaskContext) -> None:
        runs.append(ctx.get_document()["_id"])

    try:
        mongoreact.start()
        mongoreact.start()  # idempotent
        wait_until(lambda: reconciled(db, mongoreact.instance()))
        # When a matching user is inserted
        db.users.insert_one({"_id": "u1", "status": "active"})
        # Then the handler runs for it
        wait_until(lambda: runs == ["u1"], message="the handler to run")
    finally:
        assert mongoreact.stop(timeout=10) is True
    assert mongoreact.stop() is True  # stopping twice is harmless


def test_register_after_start_is_refused(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = start_with_task(make_engine, db)
    with pytest.raises(ConfigError, match="before start"):
        engine.register(task="late", collection="orders", handler=Recorder())


def test_start_without_tasks_is_refused(make_engine: EngineFactory) -> None:
    with pytest.raises(ConfigError, match="register at least one task"):
        make_engine().start()


def test_a_stopped_instance_cannot_restart(make_engine: EngineFactory, db: Database[Doc]) -> None:
    engine = start_with_task(make_engine, db)
    assert engine.stop(timeout=10)
    with pytest.raises(MongoReactError, match="cannot be started again"):
        engine.start()


def test_bad_filter_is_reported_at_start(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.register(task="t", collection="orders", handler=Recorder(), filter={"a": {"$nope": 1}})
    with pytest.raises(ConfigError, match="rejected the filter"):
        engine.start()


def test_threads_are_named_and_gone_after_stop(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    before = set(threading.enumerate())
    engine = start_with_task(make_engine, db)
    db.orders.insert_one({"_id": "o1"})
    wait_until(lambda: record(db, "orders", "o1").get("status") == "completed")
    ours = [
        t for t in threading.enumerate() if t not in before and not t.name.startswith("pymongo")
    ]
    assert ours, "the engine started no threads"
    assert all(t.name.startswith("mongoreact-") for t in ours), [t.name for t in ours]
    names = {t.name.split("-")[1] for t in ours}
    assert {"leader", "leases", "dispatch", "stream", "planner", "worker"} <= names
    assert engine.stop(timeout=10)
    wait_until(lambda: not any(t.is_alive() for t in ours), message="threads to end")


def test_two_instances_in_one_process_elect_one_leader_and_fail_over(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # Given two instances of the same app in one process
    recorder = Recorder()
    first, second = make_engine(instance_id="app-1"), make_engine(instance_id="app-2")
    for engine in (first, second):
        engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(first, db)
    second.start()
    # Then exactly one of them leads
    wait_until(lambda: first.is_leader != second.is_leader, message="one leader")
    leader, follower = (first, second) if first.is_leader else (second, first)
    db.orders.insert_one({"_id": "before"})
    wait_until(lambda: recorder.count("before") == 1)
    # When the leader stops, the other takes over and keeps planning
    assert leader.stop(timeout=10)
    wait_until(lambda: follower.is_leader, message="failover")
    db.orders.insert_one({"_id": "after"})
    wait_until(lambda: recorder.count("after") == 1, message="the new leader to plan")
    assert record(db, "orders", "after")["claimedBy"] == follower.instance_id


def start_with_task(make_engine: EngineFactory, db: Database[Doc]) -> mongoreact.ReactiveTasks:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    return start(engine, db)


def test_stop_returns_within_its_timeout_with_production_timings(
    mongo_uri: str, database_name: str, db: Database[Doc]
) -> None:
    # Production defaults: 10 s heartbeats and polls must not hold stop() up.
    engine = mongoreact.ReactiveTasks(uri=mongo_uri, database=database_name)
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    start(engine, db)
    began = time.monotonic()
    assert engine.stop(timeout=5) is True
    assert time.monotonic() - began < 5


def test_stop_gives_up_on_a_hung_handler_after_its_timeout(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    hang, hung = threading.Event(), threading.Event()

    def handler(ctx: TaskContext) -> None:
        hung.set()
        hang.wait(30)

    engine = make_engine()
    engine.register(task="hang", collection="jobs", handler=handler, debounce=0)
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    wait_until(hung.is_set)  # running, not only claimed (stop gives back what is not)
    began = time.monotonic()
    try:
        assert engine.stop(timeout=1) is False  # not clean: a handler was still running
        assert time.monotonic() - began < 3
        # the record keeps its lease; it expires and another instance takes over
        assert record(db, "jobs", "j1")["status"] == "processing"
    finally:
        hang.set()


def test_a_handler_outliving_stop_keeps_a_working_client(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # stop() closed the client under a handler still running: its next database call
    # failed with "Cannot use MongoClient after close" and counted as a task failure.
    release, running = threading.Event(), threading.Event()
    outcome: list[object] = []

    def handler(ctx: TaskContext) -> None:
        running.set()
        release.wait(30)
        try:
            outcome.append(ctx.get_document())
        except Exception as error:
            outcome.append(error)

    engine = make_engine()
    engine.register(task="slow", collection="jobs", handler=handler, debounce=0)
    start(engine, db)
    db.jobs.insert_one({"_id": "j1"})
    wait_until(running.is_set)
    assert engine.stop(timeout=0.5) is False
    assert engine._connection.is_open  # left open for the handler
    release.set()
    wait_until(lambda: outcome, message="the handler to finish")
    assert outcome == [{"_id": "j1"}]
    wait_until(lambda: not engine._connection.is_open, message="the client to be closed after it")


# A 15 s handler is running when the script ends the instance: with "stop" it calls
# stop(timeout=1) and prints whether that was clean; with "signal" it waits for the
# SIGTERM that install_signal_handlers(timeout=2) turns into a stop and an exit.
SLOW_HANDLER_SCRIPT = """
import sys, threading
import mongoreact as reactive
from mongoreact.testing.helpers import FAST_SETTINGS

uri, name, ending = sys.argv[1:4]
reactive.init(uri=uri, database=name, **FAST_SETTINGS)
started = threading.Event()

def slow(ctx):
    started.set()
    threading.Event().wait(15)

reactive.register(task="slow", collection="jobs", handler=slow, debounce=0)
reactive.start()
if ending == "signal":
    reactive.install_signal_handlers(timeout=2)
reactive.instance().database.jobs.insert_one({"_id": 1})
assert started.wait(30)
print("running", flush=True)
if ending == "stop":
    print("clean" if reactive.stop(timeout=1) else "not clean", flush=True)
else:
    threading.Event().wait(60)
"""


@contextlib.contextmanager
def handler_running_in(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` in a new process until it prints that its handler runs."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "running"
            yield process
        finally:
            process.kill()


def seconds_to_exit(process: subprocess.Popen[str]) -> float:
    began = time.monotonic()
    process.wait(timeout=30)
    return time.monotonic() - began


def test_the_process_exits_within_the_stop_timeout_while_a_handler_runs(
    mongo_uri: str, database_name: str
) -> None:
    # Handler threads were joined at interpreter exit: with stop(timeout=1) and a 15 s
    # handler, the process lived on until the handler returned.
    with handler_running_in(SLOW_HANDLER_SCRIPT, mongo_uri, database_name, "stop") as process:
        exited_after = seconds_to_exit(process)
        assert process.stdout is not None and process.stdout.read().strip() == "not clean"
        assert process.returncode == 0
        assert exited_after < 5, exited_after  # stop's 1 s and the interpreter's exit


def test_sigterm_with_install_signal_handlers_exits_within_the_timeout(
    mongo_uri: str, database_name: str
) -> None:
    # The reported case: install_signal_handlers(timeout=2) and a 15 s handler; the
    # process was still alive 8 s after SIGTERM.
    with handler_running_in(SLOW_HANDLER_SCRIPT, mongo_uri, database_name, "signal") as process:
        process.send_signal(signal.SIGTERM)
        exited_after = seconds_to_exit(process)
        assert process.returncode == 128 + signal.SIGTERM
        assert exited_after < 6, exited_after  # the 2 s timeout and the exit itself


def test_a_rejected_watch_projection_is_named_at_start(make_engine: EngineFactory) -> None:
    engine = make_engine()
    projection = {"total": {"$nope": "$amount"}}
    engine.register(task="t", collection="orders", handler=Recorder(), watch_projection=projection)
    with pytest.raises(ConfigError, match="rejected the watch_projection") as caught:
        engine.start()
    assert caught.value.option == "watch_projection"


def test_the_management_api_after_stop_says_so(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder(), debounce=0)
    engine.cron_task("nightly", "CRON 0 3 * * *", lambda: None)
    start(engine, db)
    assert engine.stop(timeout=10)
    for call in (
        engine.get_tasks, engine.count_tasks, engine.retry_tasks, engine.cron_tasks,
        engine.overview, lambda: engine.get_task("t", 1), lambda: engine.run_cron_task("x"),
    ):  # fmt: skip
        with pytest.raises(NotStartedError, match="stopped"):
            call()


UNREACHABLE = "mongodb://ops:s3cr3t@127.0.0.1:1/app"


def test_start_against_an_unreachable_server_says_so_within_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = mongoreact.ReactiveTasks(uri=UNREACHABLE)
    engine.register(task="t", collection="c", handler=lambda ctx: None)
    began = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="mongoreact"),
        pytest.raises(mongoreact.ServerUnreachableError, match="within 1s") as caught,
    ):
        engine.start(timeout=1.0)
    assert time.monotonic() - began < 5
    assert "s3cr3t" not in str(caught.value) and "ops:***@127.0.0.1:1" in str(caught.value)
    assert "connecting to MongoDB at mongodb://ops:***@" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert not engine.is_running


def test_stop_cancels_a_start_still_waiting_for_the_server() -> None:
    """Regression: a SIGTERM during start() could leave an instance reporting itself
    healthy while every thread failed on a closed client."""
    engine = mongoreact.ReactiveTasks(uri=UNREACHABLE)
    engine.register(task="t", collection="c", handler=lambda ctx: None)
    failure: list[BaseException] = []

    def starting() -> None:
        try:
            engine.start(timeout=30.0)
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=starting)
    thread.start()
    wait_until(lambda: engine._state == "starting")  # inside the wait for the server
    began = time.monotonic()
    assert engine.stop() is True
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - began < 3
    assert isinstance(failure[0], mongoreact.StartCancelledError)
    assert not engine.is_running and not engine.health()["healthy"]
    with pytest.raises(MongoReactError, match="cannot be started again"):
        engine.start()


def test_run_until_signalled_stops_on_sigterm_in_a_script(
    mongo_uri: str, db: Database[Doc], tmp_path: Any
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import mongoreact, sys\n"
        f"mongoreact.init(uri={mongo_uri!r}, database={db.name!r})\n"
        "mongoreact.register(task='t', collection='c', handler=lambda ctx: None)\n"
        "print('clean' if mongoreact.run_until_signalled(stop_timeout=5) else 'unclean',"
        " flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: db["_mongoreact_globals"].find_one({"_id": "leader"}), timeout=30)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and out.strip() == "clean", err


def test_start_names_refused_credentials(mongo_uri: str) -> None:
    wrong = mongo_uri.replace("mongodb://", "mongodb://nobody:wr0ng-pw@")
    engine = mongoreact.ReactiveTasks(uri=wrong, database="d")
    engine.register(task="t", collection="c", handler=lambda ctx: None)
    began = time.monotonic()
    with pytest.raises(
        mongoreact.ServerUnreachableError, match="refused the credentials"
    ) as caught:
        engine.start(timeout=20)
    assert time.monotonic() - began < 10  # at once, not after the timeout
    assert "wr0ng-pw" not in str(caught.value)
