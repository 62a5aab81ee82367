"""Published window figures (streams.roi_agent.window_figures): the money precision of RoiUpdates and the query API."""

from __future__ import annotations

from decimal import Decimal

import pytest

from roitrack.roi import CampaignAggregate, SpendRecord, roi_metrics, round_money
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel
from streams.records import decimal_text
from streams.roi_agent import window_figures

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
HOUR_S = 3600
T0_MS = 19_800 * 24 * HOUR_MS
#: A third of 100, as a linear split over three campaigns stores it: 18 fractional digits.
REVENUE_SHARE = Decimal("33.333333333333333333")
WEIGHT_SHARE = Decimal("0.333333333333333333333333")


def by_model(value: Decimal) -> dict[AttributionModel, Decimal]:
    return {model: value for model in ATTRIBUTION_MODELS}


def aggregate_with_split_credit() -> CampaignAggregate:
    """Build a campaign with spend 100 over 122 hours and a third of one conversion of 100."""
    aggregate = CampaignAggregate("camp")
    aggregate.set_campaign("Camp", Decimal("0.4"))
    aggregate.set_spend("s1", SpendRecord(Decimal(100), T0_MS, T0_MS + 122 * HOUR_MS))
    aggregate.add_credit(T0_MS + HOUR_MS + 30 * MINUTE_MS, by_model(WEIGHT_SHARE), by_model(REVENUE_SHARE), (HOUR_S,))
    return aggregate


def fraction_digits(text: str) -> int:
    return len(text.partition(".")[2])


def test_window_spend_rounded_to_six_places() -> None:
    aggregate = aggregate_with_split_credit()

    figures = window_figures(aggregate, HOUR_S, T0_MS + 2 * HOUR_MS)

    # The window starts 59 minutes before its end: 100 x 59 / (122 x 60) = 0.80601092896...
    assert figures["spend"] == "0.806011"


def test_window_revenue_rounded_to_six_places() -> None:
    aggregate = aggregate_with_split_credit()

    figures = window_figures(aggregate, HOUR_S, T0_MS + 2 * HOUR_MS)

    for model in ATTRIBUTION_MODELS:
        assert figures["models"][model]["revenue"] == "33.333333", model
        assert figures["models"][model]["conversions"] == decimal_text(WEIGHT_SHARE), model


def test_window_metrics_use_exact_figures() -> None:
    aggregate = aggregate_with_split_credit()
    exact = aggregate.figures(HOUR_S, T0_MS + 2 * HOUR_MS)

    figures = window_figures(aggregate, HOUR_S, T0_MS + 2 * HOUR_MS)

    metrics = roi_metrics(REVENUE_SHARE, WEIGHT_SHARE, exact.spend, Decimal("0.4"))
    assert metrics.roi is not None
    assert figures["roi"] == decimal_text(metrics.roi)
    assert metrics.cpa is not None
    assert figures["cpa"] == decimal_text(metrics.cpa)


@pytest.mark.parametrize("window_s", [HOUR_S, None], ids=["1h", "lifetime"])
def test_window_figures_keep_stored_state(window_s: int | None) -> None:
    aggregate = aggregate_with_split_credit()
    stored = aggregate.to_json()

    figures = window_figures(aggregate, window_s, T0_MS + 2 * HOUR_MS)

    assert fraction_digits(figures["spend"]) <= 6
    assert aggregate.to_json() == stored
    assert aggregate.lifetime.revenue["linear"] == REVENUE_SHARE


def test_lifetime_spend_whole_amount() -> None:
    figures = window_figures(aggregate_with_split_credit(), None, T0_MS + 2 * HOUR_MS)

    assert figures["spend"] == "100"


@pytest.mark.parametrize(("value", "rounded"), [
    ("0.0000005", "0"), ("0.0000015", "0.000002"), ("0.0000025", "0.000002"), ("12.3456785", "12.345678"),
    ("123456789012345.123456789012345678", "123456789012345.123457"),
])
def test_round_money_half_to_even(value: str, rounded: str) -> None:
    assert decimal_text(round_money(Decimal(value))) == rounded
