"""/admin in headless Chromium, served over real HTTP: the login, every page with its charts
drawn by the vendored Chart.js (under the page's Content-Security-Policy), the requeue action,
and a refused unauthenticated request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from rq import Queue
from rq.registry import FailedJobRegistry
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from werkzeug.serving import BaseWSGIServer, make_server

from habitbot.services import heartbeat
from habitbot.services.health import worker_beat
from tests.support.browser import chromium, wait
from tests.webhooks.test_admin import TOKEN, _app, _close, make_failed_job, populate

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path("/tmp")
CANVAS_DRAWN = """
const canvas = document.getElementById(arguments[0]);
if (!canvas || canvas.dataset.drawn !== "1" || !window.Chart || !Chart.getChart(canvas)) {
  return false;
}
const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { return true; } }
return false;
"""


@pytest.fixture
def server(database_url, redis_url, redis_conn) -> Iterator[str]:
    app: Flask = _app(database_url, redis_url, ADMIN_TOKEN=TOKEN)
    http: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, name="admin-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)
        http.server_close()
        _close(app)


@pytest.fixture
def browser(tmp_path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def _open(driver: WebDriver, url: str, heading: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith(heading))


def _assert_drawn(driver: WebDriver, *canvas_ids: str) -> None:
    for canvas_id in canvas_ids:
        assert wait(driver, lambda d, c=canvas_id: d.execute_script(CANVAS_DRAWN, c)), canvas_id


def _log_in(driver: WebDriver, base: str) -> None:
    _open(driver, f"{base}/admin/", "Log in")
    assert driver.current_url == f"{base}/admin/login"
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith("Overview"))


def test_an_operator_logs_in_sees_every_page_and_requeues_a_job(server, browser, engine,
                                                               redis_conn):
    heartbeat.beat(redis_conn, "bot")
    heartbeat.beat(redis_conn, "scheduler")
    worker_beat(redis_conn, "worker-0")
    populate(engine)
    job_id = make_failed_job(redis_conn)

    _log_in(browser, server)
    assert browser.find_element(By.ID, "health-status").text == "OK"
    assert "users" in browser.find_element(By.ID, "figures").text
    _assert_drawn(browser, "send-rate")
    browser.save_screenshot(str(SCREENSHOTS / "admin_overview.png"))

    _open(browser, f"{server}/admin/activity", "Activity")
    _assert_drawn(browser, "daily", "hourly")
    assert "sent: 3" in browser.find_element(By.ID, "hourly-totals").text
    browser.save_screenshot(str(SCREENSHOTS / "admin_activity.png"))

    _open(browser, f"{server}/admin/payments", "Payments")
    _assert_drawn(browser, "payments")
    assert browser.find_element(By.ID, "stale-total").text == "1"
    browser.save_screenshot(str(SCREENSHOTS / "admin_payments.png"))

    _open(browser, f"{server}/admin/users?telegram_id=1001", "User lookup")
    report = browser.find_element(By.ID, "user-report").text
    assert "plan premium" in report and "<script>alert('habit')</script> [active]" in report
    assert browser.execute_script("return window.__pwned === undefined")

    _open(browser, f"{server}/admin/jobs", "Jobs")
    _assert_drawn(browser, "queues")
    assert job_id in browser.find_element(By.ID, "failed-jobs").text
    browser.save_screenshot(str(SCREENSHOTS / "admin_jobs.png"))
    browser.find_element(By.CSS_SELECTOR, "#failed-jobs button.requeue").click()
    wait(browser, lambda d: "Requeued 1 job(s)" in d.find_element(By.TAG_NAME, "body").text)
    assert FailedJobRegistry(queue=Queue("default", connection=redis_conn)).count == 0
    assert Queue("default", connection=redis_conn).job_ids == [job_id]
    assert "No failed jobs." in browser.find_element(By.ID, "failed-jobs").text

    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(browser, lambda d: d.current_url == f"{server}/admin/login")
    _open(browser, f"{server}/admin/jobs", "Log in")


def test_an_unauthenticated_request_is_refused(server, browser, redis_conn):
    job_id = make_failed_job(redis_conn)
    _open(browser, f"{server}/admin/jobs", "Log in")
    assert browser.current_url == f"{server}/admin/login"
    assert job_id not in browser.page_source
    with requests.Session() as http:
        refused = http.post(f"{server}/admin/jobs/requeue", data={"job_id": job_id},
                            allow_redirects=False, timeout=10)
        assert refused.status_code == 403
        assert http.get(f"{server}/admin/?token={TOKEN}", timeout=10).status_code == 400
        page = http.get(f"{server}/admin/payments", allow_redirects=False, timeout=10)
        assert page.status_code == 302 and page.headers["Location"].endswith("/admin/login")
    assert FailedJobRegistry(queue=Queue("default", connection=redis_conn)).count == 1
