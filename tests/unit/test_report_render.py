"""`roitrack report` on aggregates and history written to fakeredis: escaping, layout and the chart."""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from pathlib import Path

import fakeredis
import orjson

from roitrack.history import Period, encode_totals
from roitrack.report import write_report
from roitrack.roi import CampaignAggregate, ModelTotals, SpendRecord
from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel
from streams.state import Keys

HOUR_MS = 3_600_000
T0_MS = 20_000 * 24 * HOUR_MS
HOSTILE = '<script>alert("x")</script> & co'


def by_model(value: str) -> dict[AttributionModel, Decimal]:
    return {model: Decimal(value) for model in ATTRIBUTION_MODELS}


def store_campaign(client: fakeredis.FakeRedis, keys: Keys, partition: int, campaign_id: str, name: str,
                   revenue_per_hour: str, hours: int) -> None:
    aggregate = CampaignAggregate(campaign_id)
    aggregate.set_campaign(name, Decimal("0.5"))
    aggregate.set_spend("s1", SpendRecord(Decimal(100), T0_MS, T0_MS + hours * HOUR_MS))
    history = {}
    for hour in range(hours):
        bucket = ModelTotals()
        bucket.add(by_model("1"), by_model(revenue_per_hour))
        aggregate.lifetime.merge(bucket)
        history[str(T0_MS + hour * HOUR_MS)] = encode_totals(bucket)
    client.sadd(keys.campaign_index(partition), campaign_id)
    client.set(keys.campaign(partition, campaign_id), orjson.dumps(aggregate.to_json()))
    client.hset(keys.history(partition, campaign_id), mapping=history)


def settings() -> Settings:
    return Settings(redis_namespace="report-unit", campaign_partitions=2)


def test_report_escapes_names_and_embeds_png(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("report-unit")
    store_campaign(client, keys, 0, "alpha", HOSTILE, "20", 10)
    store_campaign(client, keys, 1, "beta", "Beta", "5", 10)

    result = write_report(settings(), tmp_path / "report.html", Period(), "en", client=client)
    html = result.path.read_text(encoding="utf-8")

    assert "<script" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 1
    png = base64.b64decode(images[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000
    # Lifetime: alpha earned 200 on a spend of 100 at margin 0.5, so ROI 0 and ROAS 2.
    assert '<td class="number roi" data-value="0.000000">0.00%</td>' in html
    assert '<td class="number roas" data-value="2.000000">2.00</td>' in html
    assert [campaign.campaign.campaign_id for campaign in result.data.campaigns] == ["alpha", "beta"]
    assert len(result.data.campaigns[0].series) == 10


def test_report_period_counts_whole_buckets(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    store_campaign(client, Keys("report-unit"), 0, "alpha", "Alpha", "20", 10)

    period = Period(T0_MS + 2 * HOUR_MS + 1, T0_MS + 4 * HOUR_MS)
    result = write_report(settings(), tmp_path / "period.html", period, "nl", client=client)
    figures = result.data.campaigns[0]

    assert result.data.period == Period(T0_MS + 2 * HOUR_MS, T0_MS + 4 * HOUR_MS)
    assert figures.totals.revenue["linear"] == Decimal(40)
    assert figures.spend == Decimal(20)
    # (40 x 0.5 - 20) / 20 = 0
    assert figures.metrics["linear"].roi == Decimal(0)
    html = result.path.read_text(encoding="utf-8")
    assert '<td class="number revenue" data-value="40">40,00</td>' in html
    assert "hele blokken van 1 u" in html
    assert "Tijdsverval" in html
    assert "Time decay" not in html


def test_chart_takes_names_with_dollars_and_underscores(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("report-unit")
    # Unquoted, "$...$" is matplotlib math text (a parse error here) and "_..." hides a legend entry.
    store_campaign(client, keys, 0, "dollar", "Save $5 ^{ now $x_", "20", 3)
    store_campaign(client, keys, 1, "hidden", "_internal", "5", 3)

    result = write_report(settings(), tmp_path / "names.html", Period(), "en", client=client)

    assert "Save $5 ^{ now $x_" in result.path.read_text(encoding="utf-8")


def test_report_without_campaigns(tmp_path: Path) -> None:
    result = write_report(settings(), tmp_path / "empty.html", Period(), "nl", client=fakeredis.FakeRedis())
    html = result.path.read_text(encoding="utf-8")

    assert "Geen campagnes gevonden in Redis-namespace report-unit." in html
    assert "<img" not in html


def test_chart_colours_match_dashboard() -> None:
    from importlib import resources

    from roitrack.report.chart import COLOURS

    script = resources.files("streams.dashboard").joinpath("static", "dashboard.js").read_text(encoding="utf-8")
    block = re.search(r"const COLOURS = \[(.*?)\];", script, re.S)

    assert block is not None
    assert tuple(re.findall(r'"(#[0-9a-f]{6})"', block.group(1))) == COLOURS
