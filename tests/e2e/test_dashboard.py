"""The live dashboard in a real headless Chromium, served and fed by a real worker.

A worker runs with its web server on a free loopback port, against the
session's tansu broker and Redis. The browser opens /dashboard before any data
exists. The test then produces two campaigns, their spend, two clicks and a
purchase, and an alert, and checks that each shows up in the page without a
reload. It switches the attribution model and the language, and saves a
screenshot to artifacts/dashboard.png.

Needs Debian's /usr/bin/chromium and /usr/bin/chromedriver, like
tests/e2e/test_browser_pixel.py: without them the test is skipped, or fails
when the CI environment variable is set.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.e2e.test_browser_pixel import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, require_browser
from tests.harness import REPO_ROOT, WorkerProcess, click, ids, purchase, send, wait_for

SCREENSHOT = REPO_ROOT / "artifacts" / "dashboard.png"
WAIT_S = 60.0
MARGIN = "0.8"
SPEND = "100"
AMOUNT = "200"
#: A campaign name and an alert message that would run script if the page inserted them as HTML.
HOSTILE_NAME = 'Alpha <img src=x onerror="window.__injected=1">'
HOSTILE_MESSAGE = "ROI below threshold <script>window.__injected=2</script>"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # loopback URL built by the test
        return response.status, dict(response.headers), response.read()


def page_is_served(url: str) -> bool:
    try:
        return fetch(url)[0] == 200
    except OSError:
        return False


def start_worker(make_settings: Callable[..., Settings], log_dir: Path) -> tuple[Settings, WorkerProcess, str]:
    """Start a worker with its web server on a free port, once its topics (the alerts topic too) exist."""
    settings = make_settings(
        web_enabled=True,
        web_port=free_port(),
        roi_update_interval_s=0.2,
        conversion_settle_s=1.0,
        conversion_idle_release_s=2.0,
    )
    create_topics(settings, settings.kafka_bootstrap)
    worker = WorkerProcess(settings, log_dir).start()
    base_url = f"http://127.0.0.1:{settings.web_port}"
    wait_for(lambda: page_is_served(f"{base_url}/dashboard"), WAIT_S, "the worker's web server", worker)
    return settings, worker, base_url


def check_clean_exit(worker: WorkerProcess, code: int | None) -> None:
    assert code == 0, worker.log_tail()
    log_text = worker.log_text()
    assert "Traceback" not in log_text, log_text[-4000:]


@pytest.fixture
def dashboard_worker(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings, worker, base_url = start_worker(make_settings, tmp_path)
    try:
        yield settings, base_url
    finally:
        code = worker.stop()
    check_clean_exit(worker, code)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1200,1400")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cell(browser: Any, campaign: str, column: str) -> str:
    """Return the text of one figure in a campaign's row, or '' while the row is missing."""
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, f'#campaigns tr[data-campaign="{campaign}"] td.{column}')
    return str(found[0].text) if found else ""


def wait_for_cell(browser: Any, campaign: str, column: str, expected: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(
        lambda driver: cell(driver, campaign, column) == expected,
        message=f"{column} of {campaign} never became {expected!r}; last seen {cell(browser, campaign, column)!r}",
    )


def produce_campaigns(settings: Settings, alpha: str, beta: str, now: datetime) -> None:
    for campaign, name in ((alpha, HOSTILE_NAME), (beta, "Beta")):
        send(settings, settings.topic_campaigns, campaign, {
            "type": "campaign", "campaign_id": campaign, "name": name, "channel": "instagram",
            "start": iso(now - timedelta(days=1)), "margin": MARGIN,
        })
        send(settings, settings.topic_spend, campaign, {
            "type": "spend", "spend_id": ids("spend"), "campaign_id": campaign, "amount": SPEND,
            "currency": "EUR", "period_start": iso(now - timedelta(days=1)), "period_end": iso(now + timedelta(days=1)),
        })


def test_dashboard_live_updates(dashboard_worker: tuple[Settings, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    settings, base_url = dashboard_worker
    alpha, beta, person = ids("alpha"), ids("beta"), ids("person")
    now = datetime.now(timezone.utc)

    status, headers, _ = fetch(f"{base_url}/dashboard")
    assert status == 200
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"

    browser.get(f"{base_url}/dashboard")
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_element(By.ID, "status").text == "Live",
        message="the page never reported its event stream as live",
    )
    browser.execute_script("window.__loadedOnce = 'yes';")
    assert browser.find_element(By.ID, "no-campaigns").is_displayed()

    # Campaigns and spend without conversions: ROI -100 %, ROAS 0. The ROI needs
    # the margin too, which may arrive in a later update than the spend.
    produce_campaigns(settings, alpha, beta, now)
    wait_for_cell(browser, alpha, "roi", "-100.00%")
    wait_for_cell(browser, beta, "roi", "-100.00%")
    assert cell(browser, alpha, "spend") == "€100.00"
    assert cell(browser, beta, "roas") == "0.00"
    assert cell(browser, alpha, "cpa") == "n/a"

    # Alpha's click, then Beta's, then a purchase of 200: last touch credits Beta,
    # first touch Alpha. ROI = (200 x 0.8 - 100) / 100 = 60 %, ROAS = 2.
    send(settings, settings.topic_touchpoints, person, click(person, alpha, iso(now - timedelta(minutes=50))))
    send(settings, settings.topic_touchpoints, person, click(person, beta, iso(now - timedelta(minutes=40))))
    send(settings, settings.topic_conversions, person, purchase(person, iso(now - timedelta(minutes=30)), amount=AMOUNT))
    wait_for_cell(browser, beta, "revenue", "€200.00")
    assert cell(browser, beta, "roi") == "60.00%"
    assert cell(browser, beta, "roas") == "2.00"
    assert cell(browser, beta, "conversions") == "1"
    assert cell(browser, beta, "cpa") == "€100.00"
    assert cell(browser, alpha, "revenue") == "€0.00"

    model = Select(browser.find_element(By.ID, "model"))
    assert model.first_selected_option.get_attribute("value") == "last_touch"
    model.select_by_value("first_touch")
    wait_for_cell(browser, alpha, "revenue", "€200.00")
    assert cell(browser, alpha, "roi") == "60.00%"
    assert cell(browser, beta, "revenue") == "€0.00"
    assert cell(browser, beta, "roi") == "-100.00%"
    model.select_by_value("linear")
    wait_for_cell(browser, alpha, "revenue", "€100.00")
    assert cell(browser, alpha, "roi") == "-20.00%"

    # The name is shown as text, and the markup in it created no element.
    assert HOSTILE_NAME in browser.find_element(By.CSS_SELECTOR, f'tr[data-campaign="{alpha}"] td.campaign').text
    assert browser.find_elements(By.CSS_SELECTOR, "#campaigns img") == []

    browser.find_element(By.ID, "lang-nl").click()
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_element(By.TAG_NAME, "h1").text == "Live ROI per campagne",
        message="the heading did not switch to Dutch",
    )
    headings = [heading.text for heading in browser.find_elements(By.CSS_SELECTOR, "#campaigns th")]
    assert headings[:4] == ["Campagne", "Uitgaven", "Conversies", "Omzet"]
    assert browser.find_element(By.ID, "status").text == "Live"
    assert Select(browser.find_element(By.ID, "model")).first_selected_option.text == "Lineair"
    assert cell(browser, alpha, "roi") == "-20,00%"
    assert cell(browser, alpha, "revenue") == "€ 100,00"
    assert cell(browser, beta, "cpa") == "€ 200,00"
    assert "lang=nl" in browser.current_url

    Select(browser.find_element(By.ID, "model")).select_by_value("last_touch")
    wait_for_cell(browser, beta, "roi", "60,00%")
    assert cell(browser, beta, "roas") == "2,00"

    send(settings, settings.topic_alerts, beta, {
        "rule_id": "roi-low", "campaign_id": beta, "window": "1h", "model": "last_touch",
        "state": "fired", "observed": "0.6", "threshold": 0.75, "message_nl": HOSTILE_MESSAGE,
        "message_en": "the English summary, which the Dutch page does not show",
    })
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: HOSTILE_MESSAGE in driver.find_element(By.ID, "alerts").text,
        message="the alert never appeared",
    )
    alert_text = browser.find_element(By.CSS_SELECTOR, "#alerts li").text
    assert "Geactiveerd" in alert_text
    assert "roi-low" in alert_text
    assert "Drempel: 0,75" in alert_text
    assert "Waarde: 0,60" in alert_text
    assert "English summary" not in alert_text
    assert browser.find_elements(By.CSS_SELECTOR, "#alerts script") == []
    assert not browser.find_element(By.ID, "no-alerts").is_displayed()

    legend = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert sorted(legend) == sorted([HOSTILE_NAME, "Beta"])
    assert browser.execute_script("return window.__loadedOnce;") == "yes", "the page reloaded"
    assert browser.execute_script("return window.__injected === undefined;")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    print(f"dashboard screenshot: {SCREENSHOT}")
    assert SCREENSHOT.stat().st_size > 0

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def test_dashboard_opens_in_dutch(dashboard_worker: tuple[Settings, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    settings, base_url = dashboard_worker
    alpha, beta = ids("alpha"), ids("beta")
    produce_campaigns(settings, alpha, beta, datetime.now(timezone.utc))

    browser.get(f"{base_url}/dashboard?lang=nl")
    wait_for_cell(browser, beta, "roi", "-100,00%")
    assert cell(browser, beta, "spend") == "€ 100,00"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Live ROI per campagne"
    assert browser.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "nl"
    assert cell(browser, beta, "cpa") == "n.v.t."
    status, headers, body = fetch(f"{base_url}/dashboard/catalogue.json")
    assert status == 200
    catalogue = orjson.loads(body)
    assert set(catalogue["texts"]) == {"en", "nl"}
    assert set(catalogue["texts"]["en"]) == set(catalogue["texts"]["nl"])

    # An unknown file gets the page's security headers too, and its name is not echoed back.
    with pytest.raises(urllib.error.HTTPError) as missing:
        fetch(f"{base_url}/dashboard/static/%3Cscript%3E.js")
    assert missing.value.code == 404
    assert "script-src 'self'" in missing.value.headers["Content-Security-Policy"]
    assert b"script" not in missing.value.read()

    # The language parameter is read case-insensitively.
    browser.get(f"{base_url}/dashboard?lang=NL")
    wait_for_cell(browser, beta, "roi", "-100,00%")
    assert browser.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "nl"


def test_worker_stops_with_open_stream(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings, worker, base_url = start_worker(make_settings, tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", settings.web_port), timeout=WAIT_S) as stream:
            stream.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            received = b""
            while b"event: hello" not in received:
                chunk = stream.recv(65536)
                assert chunk, f"the stream closed before its first event: {received!r}"
                received += chunk
            assert received.startswith(b"HTTP/1.1 200")
            assert b"text/event-stream" in received

            code = worker.stop()
            # The worker ends the stream when it stops, instead of waiting for the page to leave.
            while chunk:
                chunk = stream.recv(65536)
    finally:
        worker.kill()
    check_clean_exit(worker, code)
