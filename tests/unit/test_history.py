"""ROI history in roitrack.history: buckets, period figures and the cumulative ROI series."""

from __future__ import annotations

from decimal import Decimal

import pytest

from roitrack.history import (
    HistoryCredit,
    Period,
    bucket_end_ms,
    bucket_start_ms,
    decode_history,
    decode_totals,
    encode_totals,
    history_increments,
    period_spend,
    period_totals,
    roi_series,
)
from roitrack.roi import ModelTotals, SpendRecord
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
HOUR_S = 3600
T0_MS = 19_800 * 24 * HOUR_MS


def by_model(value: str) -> dict[AttributionModel, Decimal]:
    return {model: Decimal(value) for model in ATTRIBUTION_MODELS}


def totals(conversions: str, revenue: str) -> ModelTotals:
    result = ModelTotals()
    result.add(by_model(conversions), by_model(revenue))
    return result


def test_bucket_edges() -> None:
    assert bucket_start_ms(T0_MS + 59 * MINUTE_MS, HOUR_S) == T0_MS
    assert bucket_start_ms(T0_MS + HOUR_MS, HOUR_S) == T0_MS + HOUR_MS
    assert bucket_end_ms(T0_MS + 1, HOUR_S) == T0_MS + HOUR_MS
    assert bucket_end_ms(T0_MS, HOUR_S) == T0_MS


def test_increments_sum_per_campaign_and_bucket() -> None:
    credits = [
        HistoryCredit("a", T0_MS + 10 * MINUTE_MS, by_model("1"), by_model("20")),
        HistoryCredit("a", T0_MS + 50 * MINUTE_MS, by_model("0.5"), by_model("5")),
        HistoryCredit("a", T0_MS + 70 * MINUTE_MS, by_model("1"), by_model("1")),
        HistoryCredit("b", T0_MS, by_model("1"), by_model("3")),
    ]

    increments = history_increments(credits, HOUR_S)

    assert sorted(increments) == ["a", "b"]
    assert sorted(increments["a"]) == [T0_MS, T0_MS + HOUR_MS]
    assert increments["a"][T0_MS].conversions["linear"] == Decimal("1.5")
    assert increments["a"][T0_MS].revenue["last_touch"] == Decimal(25)
    assert increments["b"][T0_MS].revenue["first_touch"] == Decimal(3)


def test_totals_encoding_round_trip() -> None:
    stored = totals("0.333333333333333333", "12.5")

    decoded = decode_totals(encode_totals(stored))

    assert decoded.conversions == stored.conversions
    assert decoded.revenue == stored.revenue


def test_missing_bucket_decodes_to_zero() -> None:
    assert decode_totals(None).revenue == by_model("0")


def test_decode_history_keys_are_ints() -> None:
    raw = {str(T0_MS).encode(): encode_totals(totals("1", "2"))}

    assert list(decode_history(raw)) == [T0_MS]


def test_period_totals_by_bucket_start() -> None:
    buckets = {T0_MS: totals("1", "10"), T0_MS + HOUR_MS: totals("2", "20"), T0_MS + 2 * HOUR_MS: totals("4", "40")}

    inside = period_totals(buckets, Period(T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS))
    open_start = period_totals(buckets, Period(None, T0_MS + 2 * HOUR_MS))
    everything = period_totals(buckets, Period())

    assert inside.revenue["linear"] == Decimal(20)
    assert open_start.revenue["linear"] == Decimal(30)
    assert everything.conversions["linear"] == Decimal(7)


def test_period_aligned_widens_to_buckets() -> None:
    period = Period(T0_MS + 15 * MINUTE_MS, T0_MS + HOUR_MS + 1).aligned(HOUR_S)

    assert period == Period(T0_MS, T0_MS + 2 * HOUR_MS)
    assert Period(None, None).aligned(HOUR_S) == Period()


def test_period_spend_prorates() -> None:
    spend = [SpendRecord(Decimal(48), T0_MS, T0_MS + 48 * HOUR_MS)]

    assert period_spend(spend, Period(T0_MS, T0_MS + HOUR_MS)) == Decimal(1)
    assert period_spend(spend, Period(T0_MS + 47 * HOUR_MS, None)) == Decimal(1)
    assert period_spend(spend, Period()) == Decimal(48)
    assert period_spend(spend, Period(T0_MS + 50 * HOUR_MS, None)) == Decimal(0)


def test_roi_series_is_cumulative() -> None:
    buckets = {T0_MS: totals("1", "100"), T0_MS + 2 * HOUR_MS: totals("1", "50")}
    spend = [SpendRecord(Decimal(30), T0_MS, T0_MS + 3 * HOUR_MS)]

    points = roi_series(buckets, spend, Decimal("0.5"), T0_MS, T0_MS + 3 * HOUR_MS, HOUR_S)

    assert [point.time_ms for point in points] == [T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS, T0_MS + 3 * HOUR_MS]
    assert [point.spend for point in points] == [Decimal(10), Decimal(20), Decimal(30)]
    # (100 x 0.5 - 10) / 10 = 4; (100 x 0.5 - 20) / 20 = 1.5; (150 x 0.5 - 30) / 30 = 1.5
    assert [point.metrics["last_touch"].roi for point in points] == [Decimal(4), Decimal("1.5"), Decimal("1.5")]
    assert points[-1].metrics["linear"].roas == Decimal(5)


def test_roi_series_open_end_counts_later_spend() -> None:
    buckets = {T0_MS: totals("1", "100")}
    # 10 of the first record falls in the span, the rest of it and the whole second record after it.
    spend = [SpendRecord(Decimal(30), T0_MS, T0_MS + 3 * HOUR_MS), SpendRecord(Decimal(20), T0_MS + 5 * HOUR_MS, T0_MS + 6 * HOUR_MS)]

    bounded = roi_series(buckets, spend, Decimal("0.5"), T0_MS, T0_MS + 2 * HOUR_MS, HOUR_S)
    open_end = roi_series(buckets, spend, Decimal("0.5"), T0_MS, T0_MS + 2 * HOUR_MS, HOUR_S, open_end=True)

    assert [point.spend for point in bounded] == [Decimal(10), Decimal(20)]
    assert [point.spend for point in open_end] == [Decimal(10), Decimal(50)]
    # (100 x 0.5 - 50) / 50 = 0, the same as the open period's figures.
    assert open_end[-1].metrics["last_touch"].roi == Decimal(0)
    assert open_end[-1].spend == period_spend(spend, Period(T0_MS, None))


def test_roi_series_ignores_buckets_outside() -> None:
    buckets = {T0_MS - HOUR_MS: totals("1", "999"), T0_MS: totals("1", "10")}
    spend = [SpendRecord(Decimal(10), T0_MS, T0_MS + HOUR_MS)]

    points = roi_series(buckets, spend, None, T0_MS, T0_MS + HOUR_MS, HOUR_S)

    assert len(points) == 1
    assert points[0].metrics["last_touch"].roas == Decimal(1)
    assert points[0].metrics["last_touch"].roi is None  # no margin


@pytest.mark.parametrize("hours", [1, 2500, 9000])
def test_roi_series_point_count_is_bounded(hours: int) -> None:
    points = roi_series({}, [], None, T0_MS, T0_MS + hours * HOUR_MS, HOUR_S)

    assert 1 <= len(points) <= 2001
    assert points[-1].time_ms == T0_MS + hours * HOUR_MS
