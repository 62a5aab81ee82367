"""`roitrack report` and the dashboard's snapshot, on data that went through a real worker.

Two campaigns with a margin of 0.8 each spend 100 over two days. The first
person clicks Alpha, then Beta, and buys for 200 in the bucket two hours ago.
The second person clicks Alpha and buys for 100 in the bucket one hour ago. The report must
show each campaign's figures under every model, for all time and for a period
that holds only the first purchase, in English and Dutch, with a valid PNG.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from roitrack.demo import settings_environment
from roitrack.i18n import format_decimal, format_percent
from roitrack.roi import roi_metrics, round_money
from roitrack.settings import Settings
from streams.dashboard.snapshot import read_snapshot
from streams.records import Outgoing
from streams.roi_agent import RoiProcessor
from streams.state import Keys, StateStore, connect
from tests.harness import REPO_ROOT, click, ids, latest_by_campaign, purchase, read_topic, send, wait_for

MARGIN = Decimal("0.8")
SPEND = Decimal(100)
SPEND_HOURS = 48
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Scenario:
    settings: Settings
    alpha: str
    beta: str
    hour: datetime  # the start of the current hour: the history bucket edge after both purchases
    updates: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def scenario(worker_settings: Settings) -> Scenario:
    settings = worker_settings
    alpha, beta = ids("alpha"), ids("beta")
    first, second = ids("person"), ids("person")
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    for campaign, name in ((alpha, "Alpha"), (beta, "Beta")):
        send(settings, settings.topic_campaigns, campaign, {
            "type": "campaign", "campaign_id": campaign, "name": name, "channel": "instagram",
            "start": iso(hour - timedelta(days=1)), "margin": str(MARGIN),
        })
        send(settings, settings.topic_spend, campaign, {
            "type": "spend", "spend_id": ids("spend"), "campaign_id": campaign, "amount": str(SPEND), "currency": "EUR",
            "period_start": iso(hour - timedelta(hours=SPEND_HOURS // 2)),
            "period_end": iso(hour + timedelta(hours=SPEND_HOURS // 2)),
        })
    send(settings, settings.topic_touchpoints, first, click(first, alpha, iso(hour - timedelta(minutes=110))))
    send(settings, settings.topic_touchpoints, first, click(first, beta, iso(hour - timedelta(minutes=100))))
    send(settings, settings.topic_conversions, first, purchase(first, iso(hour - timedelta(minutes=90)), amount="200"))
    send(settings, settings.topic_touchpoints, second, click(second, alpha, iso(hour - timedelta(minutes=55))))
    send(settings, settings.topic_conversions, second, purchase(second, iso(hour - timedelta(minutes=50)), amount="100"))

    latest: dict[str, dict[str, Any]] = {}

    def attributed() -> bool:
        latest.update(latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=0.5)))
        return all(
            campaign in latest and latest[campaign]["models"]["last_touch"]["conversions"] == "1"
            for campaign in (alpha, beta)
        )

    wait_for(attributed, 90, "one last-touch conversion on each campaign")
    return Scenario(settings, alpha, beta, hour, {campaign: latest[campaign] for campaign in (alpha, beta)})


class TableReader(HTMLParser):
    """Collect the report's figures: model -> campaign -> column -> (text, data-value)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, tuple[str, str | None]]]] = {}
        self.images: list[str] = []
        self.texts: list[str] = []
        self._model: str | None = None
        self._campaign: str | None = None
        self._column: tuple[str, str | None] | None = None
        self._cell_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._model = attributes.get("data-model")
            if self._model:
                self.tables[self._model] = {}
        elif tag == "tr" and self._model and attributes.get("data-campaign"):
            self._campaign = attributes["data-campaign"]
            self.tables[self._model][str(self._campaign)] = {}
        elif tag == "td" and self._campaign:
            name = (attributes.get("class") or "").split()[-1]
            self._column = (name, attributes.get("data-value"))
            self._cell_text = []
        elif tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._column and self._model and self._campaign:
            name, value = self._column
            self.tables[self._model][self._campaign][name] = ("".join(self._cell_text), value)
            self._column = None
        elif tag == "tr":
            self._campaign = None
        elif tag == "table":
            self._model = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._column is not None and not self._cell_text:
            self._cell_text.append(data)


def run_report(settings: Settings, out: Path, *options: str) -> tuple[str, TableReader]:
    env = {**settings_environment(settings), "PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(out.parent / "mpl")}
    result = subprocess.run(
        [sys.executable, "-m", "roitrack", "report", "--out", str(out), *options],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {out}" in result.stdout
    html = out.read_text(encoding="utf-8")
    reader = TableReader()
    reader.feed(html)
    return html, reader


def check_png(source: str) -> None:
    prefix = "data:image/png;base64,"
    assert source.startswith(prefix)
    png = base64.b64decode(source[len(prefix):], validate=True)
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])
    assert width > 0
    assert height > 0
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.verify()
        assert image.format == "PNG"


def expected_row(revenue: Decimal, conversions: Decimal, spend: Decimal, language: str) -> dict[str, str]:
    metrics = roi_metrics(revenue, conversions, spend, MARGIN)
    lang: Any = language
    return {
        "spend": format_decimal(spend, 2, lang),
        "revenue": format_decimal(revenue, 2, lang),
        "roi": format_percent(metrics.roi, lang),
        "roas": format_decimal(metrics.roas, 2, lang),
        "cpa": format_decimal(metrics.cpa, 2, lang),
    }


def check_rows(reader: TableReader, expected: dict[str, dict[str, dict[str, str]]]) -> None:
    for model, campaigns in expected.items():
        assert model in reader.tables, sorted(reader.tables)
        for campaign, columns in campaigns.items():
            row = reader.tables[model][campaign]
            for column, text in columns.items():
                assert row[column][0] == text, (model, campaign, column, row[column], text)


def test_report_all_time(scenario: Scenario, tmp_path: Path) -> None:
    alpha, beta = scenario.alpha, scenario.beta
    html, reader = run_report(scenario.settings, tmp_path / "report.html", "--lang", "en")

    assert '<html lang="en">' in html
    assert "<h1>ROI report</h1>" in html
    assert "<script" not in html
    assert len(reader.images) == 1
    check_png(reader.images[0])
    assert set(reader.tables) == {"last_touch", "first_touch", "linear", "time_decay", "position_based"}
    for model in reader.tables:
        assert alpha in reader.tables[model]
        assert beta in reader.tables[model]
        assert reader.tables[model][alpha]["campaign"][0] == "Alpha"
    check_rows(reader, {
        "last_touch": {
            alpha: expected_row(Decimal(100), Decimal(1), SPEND, "en"),
            beta: expected_row(Decimal(200), Decimal(1), SPEND, "en"),
        },
        "first_touch": {
            alpha: expected_row(Decimal(300), Decimal(2), SPEND, "en"),
            beta: expected_row(Decimal(0), Decimal(0), SPEND, "en"),
        },
        "linear": {
            alpha: expected_row(Decimal(200), Decimal("1.5"), SPEND, "en"),
            beta: expected_row(Decimal(100), Decimal("0.5"), SPEND, "en"),
        },
    })
    assert reader.tables["linear"][alpha]["conversions"] == ("1.50", "1.5")
    assert reader.tables["last_touch"][beta]["roi"] == ("60.00%", "0.600000")
    # The same lifetime figures as the worker's latest roi-updates, which round revenue to 6 decimal places.
    for campaign in (alpha, beta):
        for model, figures in scenario.updates[campaign]["models"].items():
            row = reader.tables[model][campaign]
            assert round_money(Decimal(row["revenue"][1] or "0")) == Decimal(figures["revenue"]), (campaign, model)
            if figures["roi"] is not None:
                assert Decimal(row["roi"][1] or "0") == Decimal(figures["roi"]), (campaign, model)


def test_report_period_in_dutch(scenario: Scenario, tmp_path: Path) -> None:
    alpha, beta, hour = scenario.alpha, scenario.beta, scenario.hour
    # Not on bucket edges: the report widens the period to [hour - 2 h, hour - 1 h).
    since = iso(hour - timedelta(minutes=105))
    until = iso(hour - timedelta(minutes=65))
    html, reader = run_report(
        scenario.settings, tmp_path / "nl" / "report.html", "--lang", "nl", "--since", since, "--until", until,
    )

    assert '<html lang="nl">' in html
    assert "<h1>ROI-rapport</h1>" in html
    start = (hour - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M UTC")
    end = (hour - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M UTC")
    assert f"Periode: {start} – {end}" in html
    assert "Omzet" in html
    check_png(reader.images[0])
    spend = SPEND / SPEND_HOURS
    check_rows(reader, {
        "last_touch": {
            alpha: expected_row(Decimal(0), Decimal(0), spend, "nl"),
            beta: expected_row(Decimal(200), Decimal(1), spend, "nl"),
        },
        "first_touch": {
            alpha: expected_row(Decimal(200), Decimal(1), spend, "nl"),
            beta: expected_row(Decimal(0), Decimal(0), spend, "nl"),
        },
    })
    assert reader.tables["last_touch"][beta]["spend"][0] == "2,08"
    assert reader.tables["last_touch"][alpha]["cpa"][0] == "n.v.t."
    assert reader.tables["first_touch"][alpha]["revenue"][0] == "200,00"


def test_history_buckets_in_redis(scenario: Scenario) -> None:
    import redis

    from roitrack.history import decode_history
    from streams.state import partition_for_key

    settings = scenario.settings
    keys = Keys(settings.redis_namespace)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        partition = partition_for_key(scenario.alpha.encode(), settings.campaign_partitions)
        buckets = decode_history(client.hgetall(keys.history(partition, scenario.alpha)))
    finally:
        client.close()
    hour_ms = int(scenario.hour.timestamp() * 1000)
    assert sorted(buckets) == [hour_ms - 2 * 3600_000, hour_ms - 3600_000]
    assert buckets[hour_ms - 2 * 3600_000].revenue["first_touch"] == Decimal(200)
    assert buckets[hour_ms - 3600_000].revenue["last_touch"] == Decimal(100)


def test_dashboard_snapshot_matches_updates(scenario: Scenario) -> None:
    settings = scenario.settings

    async def unused_send(messages: Any) -> None:
        raise AssertionError("the snapshot must not produce messages")

    async def snapshot() -> list[dict[str, Any]]:
        store = StateStore(connect(settings), Keys(settings.redis_namespace))
        try:
            processor = RoiProcessor(settings, store, unused_send)

            def build(aggregate: Any, sequence: int, now_ms: int) -> list[Outgoing]:
                return processor.roi_updates(aggregate, sequence, now_ms)

            return await read_snapshot(settings, store, build)
        finally:
            await store.close()

    values = asyncio.run(snapshot())
    lifetime = latest_by_campaign(values)
    for campaign in (scenario.alpha, scenario.beta):
        assert campaign in lifetime
        assert lifetime[campaign]["models"] == scenario.updates[campaign]["models"]
        assert lifetime[campaign]["sequence"] >= scenario.updates[campaign]["sequence"]
    windows = {value["window"] for value in values if value["campaign_id"] == scenario.alpha}
    assert windows == {"1h", "24h", "7d", "lifetime"}


def test_report_warns_about_an_empty_namespace(redis_url: str, tmp_path: Path) -> None:
    """A mistyped namespace gives an empty report and a warning on stderr."""
    settings = Settings.model_validate({
        "kafka_bootstrap": "127.0.0.1:1", "redis_url": redis_url, "redis_namespace": f"report-empty-{tmp_path.name}",
    })
    env = {**settings_environment(settings), "PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "roitrack", "report", "--out", str(out), "--lang", "nl"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert f"no campaigns found in Redis namespace {settings.redis_namespace!r}" in result.stderr
    assert "period All time" in result.stdout
    assert "Geen campagnes gevonden" in out.read_text(encoding="utf-8")
