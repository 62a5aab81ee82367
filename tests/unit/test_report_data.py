"""`roitrack report` figures on fakeredis: the chart's last point against the table, with spend booked ahead."""

from __future__ import annotations

from decimal import Decimal

import fakeredis
import orjson
import pytest

from roitrack.attribution import DECIMAL_CONTEXT
from roitrack.history import Period, encode_totals
from roitrack.report.data import CampaignFigures, ReportData, build_report_data
from roitrack.report.render import render_html
from roitrack.roi import CampaignAggregate, ModelTotals, SpendRecord
from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel
from streams.state import Keys

HOUR_MS = 3_600_000
T0_MS = 20_000 * 24 * HOUR_MS
NAMESPACE = "report-data-unit"
#: Two hourly buckets of conversions, and spend that runs five days past the latest bucket.
SPEND_END_MS = T0_MS + 2 * HOUR_MS + 5 * 24 * HOUR_MS
SPEND_HOURS = 122


def by_model(value: str) -> dict[AttributionModel, Decimal]:
    return {model: Decimal(value) for model in ATTRIBUTION_MODELS}


def store_future_spend_campaign(client: fakeredis.FakeRedis) -> None:
    """Store a campaign with revenue 200 in two buckets, margin 0.4 and spend 100 booked until SPEND_END_MS."""
    keys = Keys(NAMESPACE)
    aggregate = CampaignAggregate("ahead")
    aggregate.set_campaign("Booked ahead", Decimal("0.4"))
    aggregate.set_spend("s1", SpendRecord(Decimal(100), T0_MS, SPEND_END_MS))
    history = {}
    for hour in range(2):
        bucket = ModelTotals()
        bucket.add(by_model("1"), by_model("100"))
        aggregate.lifetime.merge(bucket)
        history[str(T0_MS + hour * HOUR_MS)] = encode_totals(bucket)
    client.sadd(keys.campaign_index(0), "ahead")
    client.set(keys.campaign(0, "ahead"), orjson.dumps(aggregate.to_json()))
    client.hset(keys.history(0, "ahead"), mapping=history)


def report_data(period: Period) -> ReportData:
    client = fakeredis.FakeRedis()
    store_future_spend_campaign(client)
    return build_report_data(Settings(redis_namespace=NAMESPACE, campaign_partitions=1), period, client)


def report_figures(period: Period) -> CampaignFigures:
    data = report_data(period)
    assert len(data.campaigns) == 1
    return data.campaigns[0]


def test_all_time_counts_spend_booked_ahead() -> None:
    figures = report_figures(Period())

    assert figures.spend == Decimal(100)
    # (200 x 0.4 - 100) / 100 = -0.2
    assert figures.metrics["last_touch"].roi == Decimal("-0.2")


@pytest.mark.parametrize("period", [Period(), Period(T0_MS + HOUR_MS, None)], ids=["all-time", "since"])
def test_series_last_point_matches_table(period: Period) -> None:
    figures = report_figures(period)
    last = figures.series[-1]

    assert last.time_ms == T0_MS + 2 * HOUR_MS
    assert last.spend == figures.spend
    for model in ATTRIBUTION_MODELS:
        assert last.metrics[model].roi == figures.metrics[model].roi, model
        assert last.metrics[model].roas == figures.metrics[model].roas, model
        assert last.metrics[model].cpa == figures.metrics[model].cpa, model


def test_series_prorates_spend_before_last_point() -> None:
    figures = report_figures(Period())

    assert [point.time_ms for point in figures.series] == [T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS]
    assert figures.series[0].spend == DECIMAL_CONTEXT.divide(Decimal(100), SPEND_HOURS)


def test_series_with_end_prorates_to_end() -> None:
    figures = report_figures(Period(None, T0_MS + 2 * HOUR_MS))

    assert figures.spend == DECIMAL_CONTEXT.divide(Decimal(200), SPEND_HOURS)
    assert figures.series[-1].spend == figures.spend
    assert figures.series[-1].metrics["linear"].roi == figures.metrics["linear"].roi


@pytest.mark.parametrize(("period", "shown"), [
    (Period(), True), (Period(T0_MS, None), True), (Period(None, T0_MS + 2 * HOUR_MS), False),
])
def test_note_on_booked_spend_without_end(period: Period, shown: bool) -> None:
    html = render_html(report_data(period), None, "nl")

    assert ("Uitgaven die voor een latere periode zijn geboekt" in html) is shown
