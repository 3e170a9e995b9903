"""The dashboard in real headless Chromium: load, filter, open a task, retry it.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them).
Screenshots are saved under the test's output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from pymongo.database import Database

from mongoreact import ReactiveTasks, TaskContext

from .conftest import EngineFactory
from .helpers import Doc, record, start, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
                allow_module_level=True)  # fmt: skip

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# In Chromium, once per CI run (tox.ini): the pages are the same on every interpreter.
pytestmark = pytest.mark.once


@pytest.fixture
def browser() -> Iterator[Any]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        # DNS rebinding, simulated: a foreign name that resolves to this machine.
        "--host-resolver-rules=MAP rebind.example 127.0.0.1",
    ):
        options.add_argument(flag)  # fmt: skip
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def orders_with_one_failure(
    make_engine: EngineFactory, db: Database[Doc], instance_id: str, orders: int
) -> ReactiveTasks:
    """An instance syncing ``orders`` orders, of which ``o-2`` failed (once: a retry
    succeeds); returned once every record is finished."""
    failed_once: set[str] = set()

    def sync(ctx: TaskContext) -> None:
        if ctx.doc_id == "o-2" and ctx.doc_id not in failed_once:
            failed_once.add(ctx.doc_id)
            raise TimeoutError("ERP timed out")

    engine = make_engine(instance_id=instance_id)
    engine.register(task="sync-order", collection="orders", handler=sync, debounce=0,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    start(engine, db)
    db.orders.insert_many([{"_id": f"o-{i}", "amount": 10 * i} for i in range(1, orders + 1)])
    wait_until(lambda: db.orders_tasks.count_documents({"status": {"$in": ["failed", "completed"]}})
               == orders)  # fmt: skip
    return engine


def retry_the_failure(browser: Any, wait: Any) -> None:
    """Filter the failed records, open the one there is, press Retry."""
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("failed")
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.task-row")) == 1)
    browser.find_element(By.CSS_SELECTOR, "tr.task-row").click()
    wait.until(lambda d: "TimeoutError" in d.find_element(By.ID, "detail-traceback").text)
    browser.find_element(By.ID, "retry-one").click()
    wait.until(lambda d: "retried: 1 record(s) changed" in d.find_element(By.ID, "message").text)


def test_filter_open_and_retry_in_the_browser(
    make_engine: EngineFactory, db: Database[Doc], browser: Any, tmp_path: Path
) -> None:
    engine = orders_with_one_failure(make_engine, db, "web", 4)
    with make_server("127.0.0.1", 0, engine.dashboard_app(), _Server, _Quiet) as server:
        threading.Thread(target=server.serve_forever, name="dashboard-test", daemon=True).start()
        try:
            wait = WebDriverWait(browser, 15)
            browser.get(f"http://127.0.0.1:{server.server_port}/")
            wait.until(lambda d: "sync-order" in d.find_element(By.ID, "overview").text)
            browser.save_screenshot(str(tmp_path / "1-overview.png"))
            Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("failed")
            browser.find_element(By.ID, "apply").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.task-row")) == 1)
            row = browser.find_element(By.CSS_SELECTOR, "tr.task-row")
            assert '"o-2"' in row.text and "ERP timed out" in row.text
            browser.save_screenshot(str(tmp_path / "2-filtered.png"))
            row.click()
            wait.until(lambda d: "TimeoutError" in d.find_element(By.ID, "detail-traceback").text)
            assert '"amount": 20' in browser.find_element(By.ID, "detail-watched").text
            browser.save_screenshot(str(tmp_path / "3-detail.png"))
            browser.find_element(By.ID, "retry-one").click()
            wait.until(
                lambda d: "retried: 1 record(s) changed" in d.find_element(By.ID, "message").text
            )
            wait_until(lambda: record(db, "orders", "o-2")["status"] == "completed")
            browser.find_element(By.ID, "apply").click()
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr.task-row"))
            browser.save_screenshot(str(tmp_path / "4-after-retry.png"))
        finally:
            server.shutdown()
    assert record(db, "orders", "o-2")["executionHistory"][-1]["status"] == "completed"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "1-overview.png", "2-filtered.png", "3-detail.png", "4-after-retry.png",
    ]  # fmt: skip
    print(f"screenshots in {tmp_path}")


def test_mounted_under_a_prefix_in_flask(
    make_engine: EngineFactory, db: Database[Doc], browser: Any, tmp_path: Path
) -> None:
    # docs/dashboard.md's Flask example: the page under /tasks must call /tasks/api/...
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    engine = orders_with_one_failure(make_engine, db, "web", 3)
    app = Flask("shop")

    @app.route("/")
    def home() -> str:
        return "shop"

    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/tasks": engine.dashboard_app()}
    )
    with make_server("127.0.0.1", 0, app, _Server, _Quiet) as server:
        threading.Thread(target=server.serve_forever, name="flask-test", daemon=True).start()
        try:
            wait = WebDriverWait(browser, 15)
            for url in ("/tasks", "/tasks/"):
                browser.get(f"http://127.0.0.1:{server.server_port}{url}")
                wait.until(lambda d: "sync-order" in d.find_element(By.ID, "overview").text)
                assert "error" not in browser.find_element(By.ID, "message").get_attribute("class")
            retry_the_failure(browser, wait)  # its POST goes through the prefix
            browser.save_screenshot(str(tmp_path / "flask-mount.png"))
        finally:
            server.shutdown()
    wait_until(lambda: record(db, "orders", "o-2")["status"] == "completed")


def test_live_bulk_actions_instances_and_cron_in_the_browser(
    make_engine: EngineFactory, db: Database[Doc], browser: Any, tmp_path: Path
) -> None:
    def fails_for_bad(ctx: TaskContext) -> None:
        if str(ctx.doc_id).startswith("bad"):
            raise ConnectionError("partner API down")

    engine = make_engine(instance_id="web-1")
    engine.register(task="sync-order", collection="orders", handler=fails_for_bad, debounce=0,
                    retry_policy={"type": "fixed", "interval": 1, "max_attempts": 1})  # fmt: skip
    ran: list[int] = []
    engine.cron_task("nightly-report", "CRON 0 3 * * *", lambda: ran.append(1))
    start(engine, db)
    db.orders.insert_many([{"_id": "ok-1"}, {"_id": "bad-1"}])
    wait_until(lambda: db.orders_tasks.count_documents({"status": {"$in": ["failed", "completed"]}})
               == 2)  # fmt: skip
    screenshots = Path(os.environ.get("MONGOREACT_DOCS_SCREENSHOTS") or tmp_path)
    with make_server("127.0.0.1", 0, engine.dashboard_app(), _Server, _Quiet) as server:
        threading.Thread(target=server.serve_forever, name="dashboard-live", daemon=True).start()
        try:
            wait = WebDriverWait(browser, 20)
            browser.get(f"http://127.0.0.1:{server.server_port}/")
            wait.until(lambda d: "sync-order" in d.find_element(By.ID, "overview").text)
            # Instances: who leads, and its counts; the chart has this minute's runs.
            wait.until(lambda d: "leader" in d.find_element(By.ID, "instances").text)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart rect"))
            # Live: a new failure shows up without a click.
            db.orders.insert_one({"_id": "bad-2"})
            wait.until(lambda d: '"bad-2"' in d.find_element(By.ID, "task-list").text)
            browser.save_screenshot(str(screenshots / "dashboard-overview.png"))
            browser.find_element(By.ID, "live").click()  # paused: the rows stay put to act on
            # Retry all matching: asks first, with the count, and skips completed records.
            browser.find_element(By.ID, "retry-matching").click()
            alert = wait.until(lambda d: _alert(d))
            assert alert.text == "Retry 2 record(s)?"
            alert.accept()
            wait.until(
                lambda d: "retried: 2 record(s) changed" in d.find_element(By.ID, "message").text
            )
            assert record(db, "orders", "ok-1")["status"] == "completed"
            wait_until(lambda: db.orders_tasks.count_documents({"status": "failed"}) == 2)
            # Discard all matching failed: asks, then deletes only the failed records.
            browser.find_element(By.ID, "discard-matching").click()
            alert = wait.until(lambda d: _alert(d))
            assert alert.text == "Discard 2 record(s)?"
            alert.accept()
            wait.until(
                lambda d: "discarded: 2 record(s) changed" in d.find_element(By.ID, "message").text
            )
            assert [d["sourceDocId"] for d in db.orders_tasks.find()] == ["ok-1"]
            # Cron: run now.
            browser.find_element(By.XPATH, "//table[@id='cron']//button[text()='Run now']").click()
            wait_until(lambda: ran == [1], message="the cron task to run")
            # The page says so once it shows the new state (the buttons are new ones).
            wait.until(
                lambda d: "asked nightly-report to run" in d.find_element(By.ID, "message").text
            )
            # Pause a task type cluster-wide, then resume it.
            browser.find_element(
                By.XPATH, "//table[@id='overview']//button[text()='Pause 1 h']"
            ).click()
            wait.until(lambda d: _alert(d)).accept()
            wait.until(lambda d: "until" in d.find_element(By.ID, "overview").text)
            browser.save_screenshot(str(screenshots / "dashboard-paused.png"))
            browser.find_element(
                By.XPATH, "//table[@id='overview']//button[text()='Resume']"
            ).click()
            wait.until(lambda d: "until" not in d.find_element(By.ID, "overview").text)
        finally:
            server.shutdown()


def _alert(driver: Any) -> Any:
    try:
        return driver.switch_to.alert
    except Exception:
        return False


SERVE_DJANGO = """
from wsgiref.simple_server import make_server
from tests.integration.django_project.wsgi import application
server = make_server("127.0.0.1", 0, application)
print(server.server_port, flush=True)
server.serve_forever()
"""


def test_mounted_under_a_prefix_in_django(
    make_engine: EngineFactory, db: Database[Doc], browser: Any, mongo_uri: str
) -> None:
    # A Django web process (never started: it only serves the dashboard) beside a worker.
    orders_with_one_failure(make_engine, db, "worker", 3)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "MONGOREACT_TEST_DJANGO_URI": mongo_uri,
           "MONGOREACT_TEST_DJANGO_DB": db.name}  # fmt: skip
    web = subprocess.Popen(
        [sys.executable, "-c", SERVE_DJANGO], cwd=root, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert web.stdout is not None
        port = int(web.stdout.readline())
        wait = WebDriverWait(browser, 20)
        browser.get(f"http://127.0.0.1:{port}/")
        assert "shop" in browser.page_source  # Django answers outside the prefix
        browser.get(f"http://127.0.0.1:{port}/tasks")
        wait.until(lambda d: "sync-order" in d.find_element(By.ID, "overview").text)
        retry_the_failure(browser, wait)  # its POST goes through Django's mount
    finally:
        web.terminate()
        web.wait(10)
        if web.stdout is not None:
            web.stdout.close()
    wait_until(lambda: record(db, "orders", "o-2")["status"] == "completed")


_HOSTILE_PAGE = """<!doctype html><html><body><form id="f" method="post"
action="DASHBOARD/api/retry" enctype="text/plain"><input name='{"all": true, "x": "' value='"}'>
</form><script>
const results = {};
async function attempt(name, options) {
  try { const r = await fetch("DASHBOARD/api/retry", options); results[name] = r.status; }
  catch (e) { results[name] = "blocked"; }
}
(async () => {
  await attempt("json", {method: "POST", headers: {"Content-Type": "application/json"},
                         body: JSON.stringify({all: true})});
  await attempt("text", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                         body: JSON.stringify({all: true})});
  await attempt("read", {});
  document.title = JSON.stringify(results);
})();
</script></body></html>"""


def test_hostile_pages_foreign_hosts_missing_auth_and_injection_in_the_browser(
    make_engine: EngineFactory, db: Database[Doc], browser: Any
) -> None:
    """docs/production.md, "Security": what a page on another site, a rebinding DNS
    name, a visitor without credentials and an operator-shaped id get."""
    from mongoreact.dashboard import BearerAuth, Credential

    engine = orders_with_one_failure(make_engine, db, "web", 2)
    failed = {"status": "failed"}
    auth = BearerAuth([Credential("ops", "t0ken")])  # basic auth would open a login prompt
    with (
        make_server("127.0.0.1", 0, engine.dashboard_app(), _Server, _Quiet) as open_app,
        make_server("127.0.0.1", 0, engine.dashboard_app(auth=auth), _Server, _Quiet) as guarded,
    ):
        dashboard = f"http://127.0.0.1:{open_app.server_port}"
        page = _HOSTILE_PAGE.replace("DASHBOARD", dashboard).encode()

        def hostile(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/html")])
            return [page]

        with make_server("127.0.0.1", 0, hostile, _Server, _Quiet) as evil:
            for server in (open_app, guarded, evil):
                threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                wait = WebDriverWait(browser, 15)
                # Another site's page (another origin): its requests are refused or blocked.
                browser.get(f"http://localhost:{evil.server_port}/")
                wait.until(lambda d: d.title.startswith("{"))
                results = json.loads(browser.title)
                assert results["json"] == "blocked"  # the preflight is never granted
                assert results["read"] == "blocked"  # no CORS: the answer stays unread
                browser.find_element(By.ID, "f").submit()  # a cross-site form post
                wait.until(lambda d: "JSON body" in d.page_source or "refused" in d.page_source)
                assert db.orders_tasks.count_documents(failed) == 1  # nothing re-queued
                # DNS rebinding: the page under a foreign name gets 403, reads included.
                for path in ("/", "/api/tasks?status=failed"):
                    browser.get(f"http://rebind.example:{open_app.server_port}{path}")
                    wait.until(lambda d: "allowed host" in d.page_source)
                    assert "ERP timed out" not in browser.page_source
                # Without credentials: 401, nothing shown.
                browser.get(f"http://127.0.0.1:{guarded.server_port}/api/tasks?status=failed")
                wait.until(lambda d: "authentication required" in d.page_source)
                assert "ERP timed out" not in browser.page_source
                # The dashboard's own page: an operator-shaped id and an empty retry.
                browser.get(f"{dashboard}/")
                wait.until(lambda d: "sync-order" in d.find_element(By.ID, "overview").text)
                call = "return api(arguments[0], arguments[1]).then(() => 'ok', (e) => e.message);"
                injected = {"task": "sync-order", "docId": {"$gt": ""}, "delay": "1h"}
                assert "not a document id" in browser.execute_script(call, "api/defer", injected)
                assert '"all": true' in browser.execute_script(call, "api/retry", {})
                assert db.orders_tasks.count_documents(failed) == 1
                assert (
                    db.orders_tasks.count_documents({"nextRunAt": {"$gt": engine.clock.now()}}) == 0
                )
            finally:
                for server in (open_app, guarded, evil):
                    server.shutdown()
