"""ROI arithmetic in roitrack.roi: window buckets, spend proration, metrics and serialisation."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from roitrack.history import HistoryCredit, history_increments
from roitrack.roi import (
    BUCKETS_PER_WINDOW,
    CampaignAggregate,
    CreditFigures,
    ModelTotals,
    SpendRecord,
    roi_metrics,
    shared_bucket_ms,
    sum_by_span,
    window_label,
)
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel
from streams.records import decimal_text

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
HOUR_S = 3600
DAY_S = 86400
WINDOWS_S = (HOUR_S, DAY_S)
# A whole day in epoch milliseconds, so minute and day buckets start on it.
T0_MS = 19_800 * DAY_MS


def by_model(value: str) -> dict[AttributionModel, Decimal]:
    return {model: Decimal(value) for model in ATTRIBUTION_MODELS}


def credit(aggregate: CampaignAggregate, time_ms: int, weight: str = "1", revenue: str = "10") -> None:
    aggregate.add_credit(time_ms, by_model(weight), by_model(revenue), WINDOWS_S)


# --- add_credit ----------------------------------------------------------


def test_add_credit_hour_window_buckets() -> None:
    aggregate = CampaignAggregate("c1")

    credit(aggregate, T0_MS + 5 * MINUTE_MS + 42_000)

    assert list(aggregate.buckets[HOUR_S]) == [T0_MS + 5 * MINUTE_MS]


def test_add_credit_day_window_buckets() -> None:
    aggregate = CampaignAggregate("c1")

    credit(aggregate, T0_MS + 30 * MINUTE_MS)

    # A day in 60 buckets: 24 minutes each, so minute 30 falls in the bucket starting at 24.
    assert list(aggregate.buckets[DAY_S]) == [T0_MS + 24 * MINUTE_MS]


def test_add_credit_same_minute_shares_bucket() -> None:
    aggregate = CampaignAggregate("c1")

    credit(aggregate, T0_MS + 1_000, revenue="10")
    credit(aggregate, T0_MS + 59_999, revenue="5")

    bucket = aggregate.buckets[HOUR_S][T0_MS]
    assert len(aggregate.buckets[HOUR_S]) == 1
    assert bucket.revenue["linear"] == Decimal("15")
    assert bucket.conversions["linear"] == Decimal("2")


def test_add_credit_next_minute_new_bucket() -> None:
    aggregate = CampaignAggregate("c1")

    credit(aggregate, T0_MS + 59_999)
    credit(aggregate, T0_MS + 60_000)

    assert sorted(aggregate.buckets[HOUR_S]) == [T0_MS, T0_MS + MINUTE_MS]


def test_add_credit_updates_lifetime() -> None:
    aggregate = CampaignAggregate("c1")

    credit(aggregate, T0_MS, weight="0.5", revenue="20")
    credit(aggregate, T0_MS + 3 * DAY_MS, weight="0.25", revenue="4")

    assert aggregate.lifetime.conversions["time_decay"] == Decimal("0.75")
    assert aggregate.lifetime.revenue["time_decay"] == Decimal("24")


def test_add_credit_keeps_models_apart() -> None:
    aggregate = CampaignAggregate("c1")
    weights: dict[AttributionModel, Decimal] = {"last_touch": Decimal(1), "linear": Decimal("0.5")}
    revenue: dict[AttributionModel, Decimal] = {"last_touch": Decimal(30), "linear": Decimal(15)}

    aggregate.add_credit(T0_MS, weights, revenue, WINDOWS_S)

    assert aggregate.lifetime.conversions["last_touch"] == Decimal(1)
    assert aggregate.lifetime.conversions["linear"] == Decimal("0.5")
    assert aggregate.lifetime.conversions["first_touch"] == 0
    assert aggregate.lifetime.revenue["linear"] == Decimal(15)


# --- figures -------------------------------------------------------------


def test_figures_window_includes_recent_credit() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS + 90 * MINUTE_MS, revenue="10")

    figures = aggregate.figures(HOUR_S, T0_MS + 2 * HOUR_MS)

    assert figures.totals.revenue["last_touch"] == Decimal(10)


def test_figures_window_edges() -> None:
    # now at 2h 30s: the current bucket starts at 2h, the first of 60 buckets at 1h 01m.
    now_ms = T0_MS + 2 * HOUR_MS + 30_000
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS + 61 * MINUTE_MS, revenue="1")
    credit(aggregate, T0_MS + 61 * MINUTE_MS - 1, revenue="100")
    credit(aggregate, now_ms, revenue="1000")

    figures = aggregate.figures(HOUR_S, now_ms)

    assert figures.totals.revenue["last_touch"] == Decimal(1001)
    assert figures.totals.conversions["last_touch"] == Decimal(2)


def test_figures_lifetime_includes_old_credit() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS, revenue="7")
    credit(aggregate, T0_MS + 10 * DAY_MS, revenue="3")

    figures = aggregate.figures(None, T0_MS + 10 * DAY_MS)

    assert figures.totals.revenue["first_touch"] == Decimal(10)
    assert figures.totals.conversions["first_touch"] == Decimal(2)


def test_figures_window_excludes_old_credit() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS, revenue="7")
    credit(aggregate, T0_MS + 10 * DAY_MS, revenue="3")

    figures = aggregate.figures(DAY_S, T0_MS + 10 * DAY_MS)

    assert figures.totals.revenue["first_touch"] == Decimal(3)


def test_figures_unknown_window_is_empty() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS)

    figures = aggregate.figures(7 * DAY_S, T0_MS)

    assert figures.totals.revenue["last_touch"] == 0


def test_figures_carry_margin() -> None:
    aggregate = CampaignAggregate("c1")
    aggregate.set_campaign("Spring", Decimal("0.35"))

    assert aggregate.figures(HOUR_S, T0_MS).margin == Decimal("0.35")
    assert aggregate.figures(None, T0_MS).margin == Decimal("0.35")


def test_figures_window_spend_prorated() -> None:
    # 1 per minute over a day. The window runs from 1h 01m to now (2h 30s): 59.5 minutes.
    now_ms = T0_MS + 2 * HOUR_MS + 30_000
    aggregate = CampaignAggregate("c1")
    aggregate.set_spend("s1", SpendRecord(Decimal(1440), T0_MS, T0_MS + DAY_MS))

    figures = aggregate.figures(HOUR_S, now_ms)

    assert figures.spend == Decimal("59.5")


def test_figures_lifetime_spend_whole_amount() -> None:
    aggregate = CampaignAggregate("c1")
    aggregate.set_spend("s1", SpendRecord(Decimal(1440), T0_MS, T0_MS + DAY_MS))
    aggregate.set_spend("s2", SpendRecord(Decimal("60.5"), T0_MS + 5 * DAY_MS, T0_MS + 6 * DAY_MS))

    figures = aggregate.figures(None, T0_MS + HOUR_MS)

    assert figures.spend == Decimal("1500.5")


def test_figures_window_ignores_future_spend() -> None:
    aggregate = CampaignAggregate("c1")
    aggregate.set_spend("s1", SpendRecord(Decimal(100), T0_MS + DAY_MS, T0_MS + 2 * DAY_MS))

    figures = aggregate.figures(HOUR_S, T0_MS + HOUR_MS)

    assert figures.spend == 0


# --- prune ---------------------------------------------------------------


def test_prune_drops_buckets_outside_window() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS)
    credit(aggregate, T0_MS + 3 * HOUR_MS)

    aggregate.prune(T0_MS + 3 * HOUR_MS)

    assert list(aggregate.buckets[HOUR_S]) == [T0_MS + 3 * HOUR_MS]


def test_prune_keeps_longer_window_buckets() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS)

    aggregate.prune(T0_MS + 3 * HOUR_MS)

    assert list(aggregate.buckets[DAY_S]) == [T0_MS]


def test_prune_keeps_lifetime() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS, revenue="10")

    aggregate.prune(T0_MS + 30 * DAY_MS)

    assert aggregate.buckets[HOUR_S] == {}
    assert aggregate.buckets[DAY_S] == {}
    assert aggregate.lifetime.revenue["linear"] == Decimal(10)


def test_prune_leaves_window_figures_unchanged() -> None:
    aggregate = CampaignAggregate("c1")
    for minute in range(0, 24 * 60, 7):
        credit(aggregate, T0_MS + minute * MINUTE_MS, revenue=str(minute))
    now_ms = T0_MS + 23 * HOUR_MS + 59 * MINUTE_MS

    before = {window_s: aggregate.figures(window_s, now_ms).totals for window_s in WINDOWS_S}
    aggregate.prune(now_ms)
    after = {window_s: aggregate.figures(window_s, now_ms).totals for window_s in WINDOWS_S}

    assert after == before
    assert len(aggregate.buckets[HOUR_S]) <= BUCKETS_PER_WINDOW + 1


# --- spend ---------------------------------------------------------------


def test_spend_within_full_overlap() -> None:
    record = SpendRecord(Decimal(100), T0_MS, T0_MS + 10 * HOUR_MS)

    assert record.within(T0_MS - DAY_MS, T0_MS + DAY_MS) == Decimal(100)


def test_spend_within_partial_overlap() -> None:
    record = SpendRecord(Decimal(100), T0_MS, T0_MS + 10 * HOUR_MS)

    assert record.within(T0_MS + 9 * HOUR_MS, T0_MS + DAY_MS) == Decimal(10)


def test_spend_within_inner_range() -> None:
    record = SpendRecord(Decimal(100), T0_MS, T0_MS + 10 * HOUR_MS)

    assert record.within(T0_MS + 2 * HOUR_MS, T0_MS + 4 * HOUR_MS) == Decimal(20)


def test_spend_within_touching_end_is_zero() -> None:
    record = SpendRecord(Decimal(100), T0_MS, T0_MS + HOUR_MS)

    assert record.within(T0_MS + HOUR_MS, T0_MS + 2 * HOUR_MS) == 0


def test_spend_within_before_start_is_zero() -> None:
    record = SpendRecord(Decimal(100), T0_MS, T0_MS + HOUR_MS)

    assert record.within(T0_MS - HOUR_MS, T0_MS) == 0


def test_spend_within_thirds() -> None:
    record = SpendRecord(Decimal(100), 0, 3 * HOUR_MS)

    third = record.within(0, HOUR_MS)

    assert abs(third - Decimal(100) / Decimal(3)) < Decimal("1e-25")


def test_set_spend_same_id_counted_once() -> None:
    aggregate = CampaignAggregate("c1")
    record = SpendRecord(Decimal(50), T0_MS, T0_MS + DAY_MS)

    aggregate.set_spend("s1", record)
    aggregate.set_spend("s1", record)

    assert aggregate.lifetime_spend() == Decimal(50)


def test_set_spend_same_id_replaces_amount() -> None:
    aggregate = CampaignAggregate("c1")

    aggregate.set_spend("s1", SpendRecord(Decimal(50), T0_MS, T0_MS + DAY_MS))
    aggregate.set_spend("s1", SpendRecord(Decimal(80), T0_MS, T0_MS + DAY_MS))

    assert aggregate.lifetime_spend() == Decimal(80)


def test_set_spend_distinct_ids_add_up() -> None:
    aggregate = CampaignAggregate("c1")

    aggregate.set_spend("s1", SpendRecord(Decimal(50), T0_MS, T0_MS + DAY_MS))
    aggregate.set_spend("s2", SpendRecord(Decimal(80), T0_MS, T0_MS + DAY_MS))

    assert aggregate.lifetime_spend() == Decimal(130)


# --- serialisation -------------------------------------------------------


def populated_aggregate() -> CampaignAggregate:
    aggregate = CampaignAggregate("spring")
    aggregate.set_campaign("Spring sale", Decimal("0.35"))
    aggregate.set_spend("s1", SpendRecord(Decimal("120.50"), T0_MS, T0_MS + DAY_MS))
    aggregate.set_spend("s2", SpendRecord(Decimal("0.000000000001"), T0_MS + DAY_MS, T0_MS + 2 * DAY_MS))
    third = Decimal(1) / Decimal(3)
    weights: dict[AttributionModel, Decimal] = {"last_touch": Decimal(1), "linear": third}
    revenue: dict[AttributionModel, Decimal] = {"last_touch": Decimal("10.50"), "linear": Decimal("10.50") * third}
    aggregate.add_credit(T0_MS + 5 * MINUTE_MS, weights, revenue, WINDOWS_S)
    aggregate.add_credit(T0_MS + 3 * HOUR_MS, weights, revenue, WINDOWS_S)
    return aggregate


def test_json_round_trip_equal() -> None:
    aggregate = populated_aggregate()

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    assert restored == aggregate


def test_json_round_trip_keeps_decimal_text() -> None:
    aggregate = populated_aggregate()

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    assert restored.to_json() == aggregate.to_json()
    assert str(restored.lifetime.revenue["last_touch"]) == "21.00"
    assert str(restored.spend["s1"].amount) == "120.50"
    assert str(restored.lifetime.conversions["linear"]) == "0.6666666666666666666666666666"
    assert str(restored.spend["s2"].amount) == "1E-12"


def test_json_round_trip_unknown_margin() -> None:
    aggregate = CampaignAggregate("c1")
    credit(aggregate, T0_MS)

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    assert restored.margin is None
    assert restored.name is None
    assert restored == aggregate


def test_json_round_trip_keeps_channel() -> None:
    aggregate = CampaignAggregate("c1")
    aggregate.set_campaign("Spring", Decimal("0.4"), "instagram")

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    assert restored.channel == "instagram"
    assert restored == aggregate


def test_json_without_channel_loads() -> None:
    stored = CampaignAggregate("c1").to_json()
    del stored["channel"]  # written before aggregates kept the channel

    restored = CampaignAggregate.from_json(stored)

    assert restored.channel is None


def test_json_round_trip_int_bucket_keys() -> None:
    aggregate = populated_aggregate()

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    assert sorted(restored.buckets) == [HOUR_S, DAY_S]
    assert sorted(restored.buckets[HOUR_S]) == [T0_MS + 5 * MINUTE_MS, T0_MS + 3 * HOUR_MS]


def test_json_round_trip_same_figures() -> None:
    aggregate = populated_aggregate()
    now_ms = T0_MS + 3 * HOUR_MS

    restored = CampaignAggregate.from_json(orjson.loads(orjson.dumps(aggregate.to_json())))

    for window_s in (HOUR_S, DAY_S, None):
        assert restored.figures(window_s, now_ms) == aggregate.figures(window_s, now_ms), window_s


def test_model_totals_json_omits_zero_models() -> None:
    totals = ModelTotals()
    totals.add({"linear": Decimal("0.5")}, {"linear": Decimal("12")})

    assert totals.to_json() == {"c": {"linear": "0.5"}, "r": {"linear": "12"}}


# --- roi_metrics ---------------------------------------------------------


def test_roi_hand_computed() -> None:
    # (300 x 0.5 - 100) / 100 = 0.5
    metrics = roi_metrics(Decimal(300), Decimal(3), Decimal(100), Decimal("0.5"))

    assert metrics.roi == Decimal("0.500000")


def test_roas_hand_computed() -> None:
    metrics = roi_metrics(Decimal(300), Decimal(3), Decimal(100), Decimal("0.5"))

    assert metrics.roas == Decimal("3.000000")


def test_cpa_hand_computed() -> None:
    metrics = roi_metrics(Decimal(300), Decimal(4), Decimal(100), Decimal("0.5"))

    assert metrics.cpa == Decimal("25.000000")


def test_roi_negative_when_margin_below_spend() -> None:
    # (100 x 0.2 - 50) / 50 = -0.6
    metrics = roi_metrics(Decimal(100), Decimal(1), Decimal(50), Decimal("0.2"))

    assert metrics.roi == Decimal("-0.600000")


def test_roi_no_revenue_is_minus_one() -> None:
    metrics = roi_metrics(Decimal(0), Decimal(0), Decimal(50), Decimal("0.2"))

    assert metrics.roi == Decimal("-1.000000")
    assert metrics.roas == 0


def test_metrics_rounded_to_six_places() -> None:
    metrics = roi_metrics(Decimal(100), Decimal(3), Decimal(300), Decimal(1))

    assert metrics.roas == Decimal("0.333333")
    assert metrics.cpa == Decimal("100.000000")
    assert metrics.roi == Decimal("-0.666667")


def test_metrics_zero_spend_roi_and_roas_none() -> None:
    metrics = roi_metrics(Decimal(300), Decimal(3), Decimal(0), Decimal("0.5"))

    assert metrics.roi is None
    assert metrics.roas is None


def test_metrics_zero_spend_cpa_zero() -> None:
    metrics = roi_metrics(Decimal(300), Decimal(3), Decimal(0), Decimal("0.5"))

    assert metrics.cpa == 0


def test_metrics_no_conversions_cpa_none() -> None:
    metrics = roi_metrics(Decimal(0), Decimal(0), Decimal(100), Decimal("0.5"))

    assert metrics.cpa is None


def test_metrics_unknown_margin_roi_none() -> None:
    metrics = roi_metrics(Decimal(300), Decimal(3), Decimal(100), None)

    assert metrics.roi is None
    assert metrics.roas == Decimal("3.000000")
    assert metrics.cpa == Decimal("33.333333")


def test_metrics_fractional_conversions() -> None:
    # Linear credit gives fractional conversions: 100 / 0.25 = 400.
    metrics = roi_metrics(Decimal(10), Decimal("0.25"), Decimal(100), Decimal(1))

    assert metrics.cpa == Decimal("400.000000")


# --- window_label --------------------------------------------------------


@pytest.mark.parametrize(
    ("window_s", "label"),
    [
        (None, "lifetime"),
        (60, "1m"),
        (15 * 60, "15m"),
        (90 * 60, "90m"),
        (3600, "1h"),
        (2 * 3600, "2h"),
        (36 * 3600, "36h"),
        (86400, "24h"),
        (2 * 86400, "2d"),
        (7 * 86400, "7d"),
        (30 * 86400, "30d"),
    ],
)
def test_window_label(window_s: int | None, label: str) -> None:
    assert window_label(window_s) == label


def test_decimal_text_keeps_every_revenue_digit() -> None:
    # 15 integer and 18 fractional digits: more than the default context's 28.
    share = Decimal("41152263004115.223333333415637861")

    assert decimal_text(share) == "41152263004115.223333333415637861"
    assert decimal_text(Decimal("1.500")) == "1.5"
    assert decimal_text(Decimal("1E+1")) == "10"


# --- sums per span ---------------------------------------------------------

_CAMPAIGNS = ("camp-a", "camp-b", "camp-c")
_figure_texts = st.one_of(
    st.sampled_from(["0", "1", "0.5", "0.25"]),
    st.decimals(min_value=0, max_value=1, places=24, allow_nan=False, allow_infinity=False).map(decimal_text),
)
_revenue_texts = st.decimals(min_value=0, max_value=Decimal("1e15"), places=18, allow_nan=False,
                             allow_infinity=False).map(decimal_text)
_credit_figures = st.tuples(
    st.sampled_from(_CAMPAIGNS),
    st.integers(min_value=T0_MS, max_value=T0_MS + 9 * DAY_MS),
    st.lists(st.sampled_from(ATTRIBUTION_MODELS), min_size=1, max_size=5, unique=True),
    st.data(),
)


@given(st.lists(_credit_figures, max_size=40), st.sampled_from([(HOUR_S, DAY_S), (HOUR_S, DAY_S, 7 * DAY_S), (5400,)]),
       st.sampled_from([HOUR_S, 60, 1800]))
@hypothesis_settings(max_examples=150, deadline=None)
def test_span_sums_match_single_adds(
    drawn: list[tuple[str, int, list[AttributionModel], st.DataObject]], windows_s: tuple[int, ...], history_s: int,
) -> None:
    """The ROI agent adds sums per campaign and span; the aggregates and history must equal per-credit adds."""
    credits: list[CreditFigures] = []
    for campaign_id, time_ms, models, data in drawn:
        weights = {model: Decimal(data.draw(_figure_texts)) for model in models}
        revenue = {model: Decimal(data.draw(_revenue_texts)) for model in models}
        credits.append((campaign_id, time_ms, weights, revenue))
    one_by_one = {campaign_id: CampaignAggregate(campaign_id) for campaign_id in _CAMPAIGNS}
    summed = {campaign_id: CampaignAggregate(campaign_id) for campaign_id in _CAMPAIGNS}
    for campaign_id, time_ms, weights, revenue in credits:
        one_by_one[campaign_id].add_credit(time_ms, weights, revenue, windows_s)
    span_ms = shared_bucket_ms(windows_s, history_s)
    sums = sum_by_span(credits, span_ms)
    for (campaign_id, start_ms), totals in sums.items():
        summed[campaign_id].add_credit(start_ms, totals.conversions, totals.revenue, windows_s)
    for campaign_id in _CAMPAIGNS:
        assert orjson.dumps(summed[campaign_id].to_json()) == orjson.dumps(one_by_one[campaign_id].to_json())
    expected_history = history_increments(
        [HistoryCredit(campaign_id, time_ms, weights, revenue) for campaign_id, time_ms, weights, revenue in credits],
        history_s,
    )
    history = history_increments(
        [HistoryCredit(campaign_id, start_ms, totals.conversions, totals.revenue)
         for (campaign_id, start_ms), totals in sums.items()],
        history_s,
    )
    assert {campaign_id: {start: totals.to_json() for start, totals in buckets.items()}
            for campaign_id, buckets in history.items()} == {
        campaign_id: {start: totals.to_json() for start, totals in buckets.items()}
        for campaign_id, buckets in expected_history.items()}


def test_shared_bucket_ms_divides_every_bucket() -> None:
    assert shared_bucket_ms((HOUR_S, DAY_S, 7 * DAY_S), HOUR_S) == MINUTE_MS
    # A 90-minute window has 90-second buckets.
    assert shared_bucket_ms((5400,), HOUR_S) == 90_000
    assert shared_bucket_ms((5400,), 60) == MINUTE_MS // 2
