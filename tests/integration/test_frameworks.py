"""Django and Flask integrations (both are test dependencies only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pymongo.database import Database

from mongoreact import ConfigError, TaskContext
from mongoreact.testing import FAST_SETTINGS

from .helpers import Doc, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_django_runreactive_runs_tasks_from_installed_apps(
    mongo_uri: str, database_name: str, db: Database[Doc]
) -> None:
    pytest.importorskip("django")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONGOREACT_TEST_DJANGO_URI": mongo_uri,
           "MONGOREACT_TEST_DJANGO_DB": database_name}  # fmt: skip
    settings = "--settings=tests.integration.django_project.settings"
    command = [sys.executable, "-m", "django", "runreactive", settings, "--stop-timeout=5"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        started = {"_id": "planner", "reconciled": {"$regex": "^confirm_order@"}}
        wait_until(lambda: db["_mongoreact_globals"].find_one(started),
                   timeout=30, message="the Django process to start mongoreact")  # fmt: skip
        db.orders.insert_many([{"_id": "o1", "status": "paid"}, {"_id": "o2", "status": "new"}])
        wait_until(lambda: db.confirmations.count_documents({}) == 1, timeout=15)
        assert db.confirmations.find_one() == {"_id": "o1"}
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "mongoreact running as" in out and "mongoreact stopped" in out, err


SHOW_RUNNING = "import mongoreact; print(mongoreact.instance().is_running)"


@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        (["-m", "django", "shell", "-c", SHOW_RUNNING], "False"),
        (["-c", "import django; django.setup(); " + SHOW_RUNNING], "True"),  # a server
    ],
)
def test_django_autostart_starts_workers_only_where_the_app_is_served(
    mongo_uri: str, database_name: str, argv: list[str], starts: str
) -> None:
    # A `manage.py shell` (or migrate) must not start claiming tasks; a server does.
    pytest.importorskip("django")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONGOREACT_TEST_DJANGO_URI": mongo_uri,
           "MONGOREACT_TEST_DJANGO_DB": database_name, "MONGOREACT_TEST_DJANGO_AUTOSTART": "1",
           "DJANGO_SETTINGS_MODULE": "tests.integration.django_project.settings"}  # fmt: skip
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == starts, done.stdout + done.stderr


def test_flask_extension_registers_and_starts(
    mongo_uri: str, database_name: str, db: Database[Doc]
) -> None:
    flask = pytest.importorskip("flask")
    from mongoreact.contrib.flask import Mongoreact

    app = flask.Flask(__name__)
    app.config["MONGOREACT"] = {"uri": mongo_uri, "database": database_name, **FAST_SETTINGS}
    app.config["MONGOREACT_AUTOSTART"] = True
    ext = Mongoreact()
    seen: list[str] = []

    @ext.task(collection="signups", debounce=0)
    def welcome(ctx: TaskContext) -> None:
        seen.append(ctx.doc_id)

    ext.init_app(app)  # registers the pending task, then starts (AUTOSTART)
    try:
        assert app.extensions["mongoreact"] is ext.engine and ext.engine.is_running
        with pytest.raises(ConfigError, match="decorate every task before init_app"):

            @ext.task(collection="late")
            def too_late(ctx: TaskContext) -> None:
                """Decorated after the workers started."""

        planner = db["_mongoreact_globals"]
        wait_until(
            lambda: planner.find_one({"_id": "planner", "reconciled": {"$regex": "^welcome@"}})
        )
        db.signups.insert_one({"_id": "s1"})
        wait_until(lambda: seen == ["s1"])
    finally:
        ext.engine.stop(timeout=5)
