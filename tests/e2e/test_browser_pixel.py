"""A real headless Chromium loads a page with the tracking pixel and follows a tracked link.

The collector and a small page server run on 127.0.0.1 in a background thread.
The browser loads the page, which fires the pixel, then clicks the tracked
link, which goes through the collector's redirect to the landing page. Both
clicks must reach the touchpoints topic under the anonymous id of the cookie
the browser holds.

Needs Debian's /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install
chromium chromium-driver``). Without them the test is skipped, unless the CI
environment variable is set, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from kafka import KafkaConsumer

from roitrack.collector import create_collector_app
from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.harness import REPO_ROOT, unique_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO_ROOT / "artifacts" / "browser-pixel.png"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=800,600",
)
#: Nothing listens here: the collector must work without Redis.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
WAIT_S = 20.0


def require_browser() -> None:
    """Skip when Chromium or its driver is missing, or fail when running in CI."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} not found; install them with "
        "`apt-get install chromium chromium-driver` to run the browser pixel test"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}")
    pytest.skip(reason)


class BackgroundServers:
    """The collector and a page server on free 127.0.0.1 ports, served from a thread's event loop."""

    def __init__(self, settings: Settings, campaign_id: str) -> None:
        self.settings = settings
        self.campaign_id = campaign_id
        self.collector_port = 0
        self.page_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-servers", daemon=True)
        self._runners: list[web.AppRunner] = []

    def __enter__(self) -> "BackgroundServers":
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=60)

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    async def _start(self) -> None:
        self.collector_port = await self._serve(create_collector_app(self.settings))
        page_app = web.Application()
        page_app.router.add_get("/", self._page)
        page_app.router.add_get("/landing", self._landing)
        self.page_port = await self._serve(page_app)

    async def _stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/"

    @property
    def landing_url(self) -> str:
        return f"http://127.0.0.1:{self.page_port}/landing"

    async def _page(self, request: web.Request) -> web.Response:
        collector = f"http://127.0.0.1:{self.collector_port}"
        pixel = f"{collector}/p.gif?cid={self.campaign_id}&amp;ch=instagram"
        link = f"{collector}/r?cid={self.campaign_id}&amp;ch=instagram&amp;to={self.landing_url}"
        html = (
            "<!doctype html><html><head><title>roitrack pixel test</title></head><body>"
            "<h1>Campaign page</h1>"
            f'<img id="pixel" alt="" width="1" height="1" src="{pixel}">'
            f'<p><a id="go" href="{link}">Go to the shop</a></p>'
            "</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    async def _landing(self, request: web.Request) -> web.Response:
        html = "<!doctype html><html><head><title>landing</title></head><body><h1>Landing page</h1></body></html>"
        return web.Response(text=html, content_type="text/html")


def clicks_for(settings: Settings, campaign_id: str, expected: int) -> list[tuple[str | None, dict[str, Any]]]:
    """Read the touchpoints topic until ``expected`` clicks of the campaign arrived, or time runs out."""
    consumer = KafkaConsumer(
        settings.topic_touchpoints,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    clicks: list[tuple[str | None, dict[str, Any]]] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline and len(clicks) < expected:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    value = orjson.loads(record.value)
                    if value.get("campaign_id") == campaign_id:
                        clicks.append((record.key.decode() if record.key else None, value))
        # Read a little longer, so an extra click would show up too.
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                value = orjson.loads(record.value)
                if value.get("campaign_id") == campaign_id:
                    clicks.append((record.key.decode() if record.key else None, value))
    finally:
        consumer.close()
    return clicks


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_pixel_and_redirect(browser: Any, kafka_bootstrap: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    campaign_id = f"browser-{uuid.uuid4().hex[:10]}"
    settings = unique_settings(kafka_bootstrap, CLOSED_REDIS_URL, collector_redirect_hosts=("127.0.0.1",))
    create_topics(settings, kafka_bootstrap)

    with BackgroundServers(settings, campaign_id) as servers:
        browser.get(servers.page_url)
        WebDriverWait(browser, WAIT_S).until(
            lambda driver: driver.execute_script(
                "const img = document.getElementById('pixel');"
                "return img.complete && img.naturalWidth === 1 && img.naturalHeight === 1;"
            ),
            message="the tracking pixel did not load as a 1x1 image",
        )
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        browser.find_element(By.ID, "go").click()
        WebDriverWait(browser, WAIT_S).until(
            lambda driver: driver.current_url == servers.landing_url,
            message="the tracked link did not land on /landing",
        )
        cookies = {cookie["name"]: cookie for cookie in browser.get_cookies()}

    assert browser.current_url == servers.landing_url
    assert browser.find_element(By.TAG_NAME, "h1").text == "Landing page"
    assert SCREENSHOT.stat().st_size > 0
    assert settings.cookie_name in cookies, f"the browser holds no {settings.cookie_name} cookie: {sorted(cookies)}"
    cookie = cookies[settings.cookie_name]
    anonymous_id = cookie["value"]
    uuid.UUID(anonymous_id)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"

    clicks = clicks_for(settings, campaign_id, expected=2)
    assert len(clicks) == 2, clicks
    assert [key for key, _ in clicks] == [anonymous_id, anonymous_id]
    assert [click["anonymous_id"] for _, click in clicks] == [anonymous_id, anonymous_id]
    by_source = {click["source"]: click for _, click in clicks}
    assert set(by_source) == {"pixel", "redirect"}
    assert by_source["pixel"]["landing_url"] == servers.page_url, "the pixel's landing URL is the page (Referer)"
    assert by_source["redirect"]["landing_url"] == servers.landing_url
    assert by_source["pixel"]["channel"] == "instagram"
    assert by_source["pixel"]["ip"] == "127.0.0.0"
    assert "Chrome" in by_source["pixel"]["user_agent"]
