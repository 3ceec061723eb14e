"""The console (/ui/) in a real browser: Debian's headless Chromium driven by Selenium
through chromedriver, against the real stack (gunicorn + worker, Postgres, Redis).

Log in, watch a backfill's bar move and finish, cancel a running job, change a retention
policy, see a 401 bring back the login box, see API values holding markup shown as text.
Each page is saved as a screenshot under the test's temporary directory; with
MDS_SCREENSHOTS set to a directory, one of each page goes there too (how docs/ui/ is made:
`MDS_SCREENSHOTS=docs/ui .venv/bin/pytest tests/test_console_browser.py`).

Waits are Selenium's WebDriverWait (polling a condition with a deadline), never sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.backfill import bars, write_ndjson
from tests.support.common import TOKEN, wait_for
from tests.support.vendor_standin import GatedSource, gated_source_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
WAIT_S = 60
# The screenshots docs/ui/ keeps (one per page; the jobs page while a backfill runs).
DOCUMENTED = {"login", "overview", "jobs-running", "job", "retention", "aggregates", "backfill", "drift", "schedules"}


@pytest.fixture(scope="module")
def svc(redis_server, tmp_path_factory):
    yield from gated_source_service(redis_server, tmp_path_factory)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    driver.shots = tmp_path / "screenshots"
    driver.shots.mkdir()
    yield driver
    driver.quit()


# -- helpers --------------------------------------------------------------------------------------------
def until(driver, condition, message: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: condition(d), message
    )


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    found = css(driver, selector)
    return found[0].text if found else ""


def visible(driver, selector: str) -> bool:
    found = css(driver, selector)
    return bool(found) and found[0].is_displayed()


def shot(driver, name: str) -> Path:
    path = driver.shots / f"{name}.png"
    driver.save_screenshot(str(path))
    target = os.environ.get("MDS_SCREENSHOTS")
    if target and name in DOCUMENTED:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)
    return path


def login(driver, svc, token: str = TOKEN, navigate: bool = True) -> None:
    if navigate:
        driver.get(svc.url + "/ui/")
    until(driver, lambda d: visible(d, "#login"), "the login box")
    box = css(driver, "#token")[0]
    box.clear()
    box.send_keys(token)
    css(driver, "#login-form button")[0].click()


def logged_in(driver, svc) -> None:
    login(driver, svc)
    until(driver, lambda d: visible(d, "#nav") and "healthy" in text_of(d, "#health-state"), "the overview")


def go(driver, svc, page: str) -> None:
    driver.get(f"{svc.url}/ui/#/{page}")


def row(driver, run_id: str):
    found = css(driver, f'tr[data-run-id="{run_id}"]')
    return found[0] if found else None


def body(n: int, symbols: tuple[str, ...]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in bars(n, symbols=symbols))


def no_script_errors(driver) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] == "javascript"]
    assert errors == [], errors


# -- the tests ------------------------------------------------------------------------------------------
def test_login_then_every_page(browser, svc):
    d = browser
    d.get(svc.url + "/ui/")
    until(d, lambda d: visible(d, "#login") and not visible(d, "#nav"), "the login box first")
    shot(d, "login")
    login(d, svc, token="not-the-token-0000")
    until(d, lambda d: "refused the token" in text_of(d, "#login-error"), "a refused token")
    assert not visible(d, "#main")

    logged_in(d, svc)
    assert d.execute_script("return sessionStorage.getItem('mds.token')") == TOKEN
    assert d.execute_script("return document.cookie") == ""
    assert TOKEN not in d.current_url
    failed = _failed_job(svc, "overview.ndjson")
    until(d, lambda d: failed in text_of(d, "#main"), "the last failure on the overview")
    assert "workers alive\n1" in text_of(d, "#main").lower()
    shot(d, "overview")

    pages = {
        "jobs": ("#jobs-list tr.job-row", "jobs"),
        "retention": ('tr[data-table="bars_ohlcv"]', "retention"),
        "aggregates": ('tr[data-name="bars_ohlcv_1h"]', "aggregates"),
        "backfill": ('form[data-job="bars_ohlcv"]', "backfill"),
        "drift": ("#drift table", "drift"),
        "schedules": ("#schedules table, #not-offered", "schedules"),
        f"jobs/{failed}": ("#job-error", "job"),
    }
    for page, (selector, name) in pages.items():
        go(d, svc, page)
        until(d, lambda d, s=selector: visible(d, s), f"the {name} page")
        shot(d, name)
    assert len(list(d.shots.glob("*.png"))) == 9
    no_script_errors(d)


def test_a_backfill_bar_moves_and_finishes(browser, svc):
    d = browser
    logged_in(d, svc)
    data = body(6_000, ("bar",))
    with GatedSource(data, split_at=len(data) // 3) as source:
        go(d, svc, "backfill")
        until(d, lambda d: visible(d, 'form[data-job="bars_ohlcv"]'), "the backfill form")
        form = css(d, 'form[data-job="bars_ohlcv"]')[0]
        form.find_element("name", "source").send_keys(source.url)
        form.find_element("name", "batch_rows").send_keys("500")
        form.find_element("css selector", "button[type=submit]").click()

        def part_way(d):
            label = text_of(d, ".runs .progress-label")
            value = d.execute_script("const p = document.querySelector('.runs progress'); return p && p.position")
            return "%" in label and not label.startswith(("0%", "100%")) and value is not None and 0 < value < 1

        until(d, part_way, "the bar part-way while the source holds")
        label = text_of(d, ".runs .progress-label")
        assert "rows" in label and "rows/s" in label, label
        assert "running" in text_of(d, ".runs .job-status")
        shot(d, "backfill-running")
        go(d, svc, "jobs")
        until(d, lambda d: "running" in text_of(d, "#jobs-list .job-status"), "the running job in the list")
        shot(d, "jobs-running")
        source.release()
        until(d, lambda d: "success" in text_of(d, "#jobs-list .job-status"), "the job to succeed")
        until(d, lambda d: text_of(d, "#jobs-list .progress-label").startswith("100%"), "a full bar")
        assert "6,000 rows" in text_of(d, "#jobs-list .progress-label")
    no_script_errors(d)


def test_cancel_a_running_job_from_its_page(browser, svc):
    d = browser
    logged_in(d, svc)
    data = body(4_000, ("cnl",))
    with GatedSource(data, split_at=len(data) // 2) as source:
        run_id = svc.trigger("/backfill/bars_ohlcv", {"source": source.url, "batch_rows": 500})
        go(d, svc, f"jobs/{run_id}")
        until(d, lambda d: "running" in text_of(d, "#job-detail .job-status") and css(d, "button.cancel"), "running")
        css(d, "button.cancel")[0].click()
        wait_for(lambda: svc.get(f"/jobs/{run_id}").json()["cancel_requested"], 30, message="the cancel to be recorded")
        source.release_when_stopped(svc.env["DATABASE_URL"], run_id)
        until(d, lambda d: "cancelled" in text_of(d, "#job-detail .job-status"), "the job to be cancelled")
        assert not css(d, "button.cancel")
        assert svc.get(f"/jobs/{run_id}").json()["status"] == "cancelled"
        shot(d, "job-cancelled")
    no_script_errors(d)


def test_change_a_retention_policy(browser, svc):
    d = browser
    logged_in(d, svc)
    go(d, svc, "retention")
    until(d, lambda d: visible(d, 'tr[data-table="news"]'), "the policies")

    def edit(value: str, enabled: bool) -> None:
        line = css(d, 'tr[data-table="news"]')[0]
        retain = line.find_element("name", "retain")
        retain.clear()
        retain.send_keys(value)
        box = line.find_element("name", "enabled")
        if box.is_selected() != enabled:
            box.click()
        line.find_element("css selector", "button.save").click()

    edit("400 days", enabled=False)
    until(d, lambda d: "news: keep 400 days (disabled)" in text_of(d, "#flash"), "the saved policy")
    policy = next(p for p in svc.get("/retention/policies").json()["policies"] if p["table"] == "news")
    assert (policy["retain"], policy["enabled"]) == ("400 days", False)
    edit("1 s", enabled=False)
    until(d, lambda d: "retain must be at least" in text_of(d, "#flash"), "the API's refusal")
    policy = next(p for p in svc.get("/retention/policies").json()["policies"] if p["table"] == "news")
    assert policy["retain"] == "400 days"

    css(d, 'tr[data-table="news"] button.dry-run')[0].click()
    until(d, lambda d: "success" in text_of(d, ".runs .job-status"), "the dry run to finish")
    no_script_errors(d)


def test_a_401_brings_back_the_login_box(browser, svc):
    d = browser
    logged_in(d, svc)
    go(d, svc, "jobs")
    until(d, lambda d: visible(d, "#jobs-list"), "the jobs page")
    # the token stops working (rotated on the server): the next poll answers 401
    d.execute_script("sessionStorage.setItem('mds.token', 'rotated-away-123456')")
    until(d, lambda d: visible(d, "#login") and not visible(d, "#main"), "the login box again")
    assert "refused the token" in text_of(d, "#login-error")
    login(d, svc, navigate=False)  # in place: the page it was on comes back
    until(d, lambda d: visible(d, "#jobs-list"), "back on the jobs page after signing in again")
    no_script_errors(d)


def test_markup_in_api_values_is_shown_as_text(browser, svc):
    d = browser
    logged_in(d, svc)
    script = "<script>window.xss=1</script>"
    img = "<img src=x onerror=window.xss=2>"
    rows = bars(2, symbols=("xss",)) + [{**bars(1)[0], "ts": script}]
    rows = [{k: v for k, v in r.items() if k != "provider"} for r in rows]  # the provider parameter fills it
    write_ndjson(svc.sources / "xss.ndjson", rows)
    run_id = svc.trigger("/backfill/bars_ohlcv", {"source": "xss.ndjson", "provider": img})
    assert svc.wait_job(run_id)["status"] == "failed"
    go(d, svc, f"jobs/{run_id}")
    until(d, lambda d: visible(d, "#job-error"), "the job's error")
    assert script in text_of(d, "#job-error")
    assert img in text_of(d, "#job-params")
    go(d, svc, "jobs")
    until(d, lambda d: row(d, run_id) is not None, "the job in the list")
    assert script in row(d, run_id).text
    injected = d.execute_script("return document.querySelectorAll('#main script, #main img').length")
    assert injected == 0 and d.execute_script("return window.xss") is None
    shot(d, "markup-as-text")
    no_script_errors(d)


def test_pause_and_resume_a_schedule(browser, svc):
    d = browser
    logged_in(d, svc)
    go(d, svc, "schedules")
    until(d, lambda d: visible(d, 'tr[data-name="retention"]'), "the schedules")
    before = next(s for s in svc.get("/schedules").json()["schedules"] if s["name"] == "retention")["paused"]
    css(d, 'tr[data-name="retention"] button.pause')[0].click()
    want = "active" if before else "paused"
    until(d, lambda d: text_of(d, 'tr[data-name="retention"] .schedule-state') == want, "the schedule's new state")
    assert (
        next(s for s in svc.get("/schedules").json()["schedules"] if s["name"] == "retention")["paused"] is not before
    )
    no_script_errors(d)


def _failed_job(svc, name: str) -> str:
    rows = bars(2, symbols=("ovw",)) + [{**bars(1)[0], "volume": -1}]
    write_ndjson(svc.sources / name, rows)
    run_id = svc.trigger("/backfill/bars_ohlcv", {"source": name})
    assert svc.wait_job(run_id)["status"] == "failed"
    return run_id
