"""``mongoreact tasks list|count|retry`` and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pymongo.database import Database

import mongoreact.cli_tasks as cli_tasks
from mongoreact.cli import main
from mongoreact.cli_tasks import redact

from .conftest import EngineFactory
from .helpers import Doc, start, wait_until


def fail(ctx: object) -> None:
    raise RuntimeError("boom (upstream)")


@pytest.fixture
def failed_tasks(make_engine: EngineFactory, db: Database[Doc], mongo_uri: str) -> list[str]:
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=fail, debounce=0,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    db.orders.insert_many([{"_id": "o1", "region": "eu"}, {"_id": "o2", "region": "us"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "failed"}) == 2)
    return ["--uri", mongo_uri, "--database", db.name]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_list_and_retry(failed_tasks: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tasks", "count", *failed_tasks, "--status", "failed")[:2] == (0, "2\n")
    code, out, _ = run(capsys, "tasks", "count", *failed_tasks, "--error", "(upstream)",
                       "--source-filter", '{"region": "eu"}')  # fmt: skip
    assert (code, out) == (0, "1\n")
    code, out, _ = run(capsys, "tasks", "list", *failed_tasks, "--sort", "sourceDocId:desc")
    header, *lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert header.split() == ["TASK", "DOCUMENT", "STATUS", "ATTEMPTS", "NEXT", "RUN", "(UTC)",
                              "LAST", "ERROR"]  # fmt: skip
    assert lines[0].startswith("sync") and '"o2"' in lines[0] and "failed" in lines[0]
    code, out, _ = run(capsys, "tasks", "list", *failed_tasks, "--json", "--limit", "1")
    assert json.loads(out)["lastError"] == "RuntimeError: boom (upstream)"
    code, out, _ = run(capsys, "tasks", "retry", *failed_tasks, "--task", "sync")
    assert (code, out) == (0, "retried 2 task(s)\n")


def test_the_uri_can_come_from_the_environment(
    failed_tasks: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGOREACT_URI", failed_tasks[1])
    assert run(capsys, "tasks", "count", "--database", failed_tasks[3])[:2] == (0, "2\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "unknown"], "no instance has registered"),
        (["--source-filter", "{not json"], "--source-filter='{not json': not Extended JSON"),
        (["--error", "a", "--error-regex", "b"], "not both"),
        (["--error-regex", "("], "--error-regex"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    failed_tasks: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "tasks", "count", *failed_tasks, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_missing_uri_or_database_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGOREACT_URI", raising=False)
    code, _, err = run(capsys, "tasks", "count")
    assert code == 2 and "--uri" in err
    code, _, err = run(capsys, "tasks", "count", "--uri", "mongodb://127.0.0.1:1/")
    assert code == 2 and "--database" in err


def test_an_unreachable_server_exits_3_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_tasks, "CONNECT_TIMEOUT_MS", 300)
    code, _, err = run(capsys, "tasks", "count", "--uri", "mongodb://ops:s3cret@127.0.0.1:1/app")
    assert code == 3 and "cannot reach MongoDB" in err
    assert "s3cret" not in err and "ops:***@" in err


def test_redact_hides_passwords_and_secret_options() -> None:
    assert redact("mongodb://a:b@h:1/db") == "mongodb://a:***@h:1/db"
    assert redact("mongodb+srv://h/db") == "mongodb+srv://h/db"
    # An unescaped "@" in the password: masked whole, as drivers read the user info.
    assert redact("mongodb://a:p@ss@h1,h2/db") == "mongodb://a:***@h1,h2/db"
    assert redact("mongodb://h/db?tlsCertificateKeyFilePassword=kp&w=1") == (
        "mongodb://h/db?tlsCertificateKeyFilePassword=***&w=1"
    )
    assert "tok" not in redact("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:tok")


def test_python_dash_m_runs_the_same_command(failed_tasks: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mongoreact", "tasks", "count", *failed_tasks],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr


def test_mongoreact_dashboard_serves_the_app(failed_tasks: list[str]) -> None:
    import re as regex
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "mongoreact", "dashboard", *failed_tasks, "--port", "0",
         "--read-only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = regex.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + (server.stderr.read() if server.stderr else "")
        url = f"http://127.0.0.1:{match.group(1)}/api/overview"
        with urllib.request.urlopen(url, timeout=10) as response:
            overview = json.loads(response.read())
        assert overview["readOnly"] is True
        assert overview["tasks"][0]["counts"] == {"failed": 2}
    finally:
        server.terminate()
        server.wait(10)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_show_prints_one_record_with_its_traceback_and_history(
    failed_tasks: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "tasks", "show", *failed_tasks, "--task", "sync", "--doc-id", '"o1"')
    assert code == 0
    assert '"sourceDocId": "o1"' in out and '"status": "failed"' in out
    assert "last error traceback:" in out and "RuntimeError: boom (upstream)" in out
    history = out.split("execution history (1, oldest first):")[1].strip().splitlines()
    assert len(history) == 1 and "failed" in history[0] and "attempt=1" in history[0]
    code, _, err = run(capsys, "tasks", "show", *failed_tasks, "--task", "sync", "--doc-id", '"x"')
    assert code == 1 and "no record of task 'sync'" in err
    # A plain string needs no JSON quoting; an operator-shaped id is refused.
    code, out, _ = run(capsys, "tasks", "show", *failed_tasks, "--task", "sync", "--doc-id", "o1")
    assert code == 0 and '"sourceDocId": "o1"' in out
    code, _, err = run(
        capsys, "tasks", "show", *failed_tasks, "--task", "sync", "--doc-id", '{"$gt": ""}'
    )
    assert code == 2 and "not a document id" in err


def test_retry_dry_run_changes_nothing(
    failed_tasks: list[str], capsys: pytest.CaptureFixture[str], db: Database[Doc]
) -> None:
    code, out, _ = run(capsys, "tasks", "retry", *failed_tasks, "--status", "failed", "--dry-run")
    assert (code, out) == (0, "would retry 2 task(s) (dry run: nothing changed)\n")
    assert db.orders_tasks.count_documents({"status": "failed"}) == 2


def test_an_unknown_sort_order_is_an_error(
    failed_tasks: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "tasks", "list", *failed_tasks, "--sort", "sourceDocId:down")
    assert code == 2 and "the order is asc or desc" in err
    assert run(capsys, "tasks", "list", *failed_tasks, "--sort", "sourceDocId:asc")[0] == 0
