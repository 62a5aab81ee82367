"""Attribution models in roitrack.attribution: eligibility, each model's weights, revenue shares."""

from __future__ import annotations

from decimal import Context, Decimal, getcontext, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roitrack.attribution import (
    DECIMAL_CONTEXT,
    WEIGHT_QUANTUM,
    AttributionParams,
    StoredTouch,
    TouchClass,
    credit_all_models,
    credit_coupon,
    exact,
    eligible_touches,
    first_touch,
    last_touch,
    linear,
    position_based,
    revenue_shares,
    time_decay,
)
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
CLICK_LOOKBACK_MS = 7 * DAY_MS
VIEW_LOOKBACK_MS = DAY_MS
HALF_LIFE_MS = 7 * DAY_MS
CONVERSION_MS = 100 * DAY_MS

PARAMS = AttributionParams(
    lookback_click_ms=CLICK_LOOKBACK_MS,
    lookback_view_ms=VIEW_LOOKBACK_MS,
    half_life_ms=HALF_LIFE_MS,
)


def touch(event_id: str, campaign_id: str, time_ms: int, touch_class: TouchClass = "click") -> StoredTouch:
    return StoredTouch(event_id=event_id, campaign_id=campaign_id, touch_class=touch_class, time_ms=time_ms)


def event_ids(touches: list[StoredTouch]) -> list[str]:
    return [stored.event_id for stored in touches]


# --- eligible_touches ----------------------------------------------------


def test_eligible_click_inside_lookback_kept() -> None:
    clicked = touch("e1", "a", CONVERSION_MS - DAY_MS)

    assert eligible_touches([clicked], CONVERSION_MS, PARAMS) == [clicked]


def test_eligible_click_at_lookback_edge_kept() -> None:
    clicked = touch("e1", "a", CONVERSION_MS - CLICK_LOOKBACK_MS)

    assert eligible_touches([clicked], CONVERSION_MS, PARAMS) == [clicked]


def test_eligible_click_past_lookback_excluded() -> None:
    clicked = touch("e1", "a", CONVERSION_MS - CLICK_LOOKBACK_MS - 1)

    assert eligible_touches([clicked], CONVERSION_MS, PARAMS) == []


def test_eligible_view_inside_view_lookback_kept() -> None:
    viewed = touch("v1", "a", CONVERSION_MS - VIEW_LOOKBACK_MS, "view")

    assert eligible_touches([viewed], CONVERSION_MS, PARAMS) == [viewed]


def test_eligible_view_past_view_lookback_excluded() -> None:
    # Two days old: inside the click lookback, outside the view lookback.
    viewed = touch("v1", "a", CONVERSION_MS - 2 * DAY_MS, "view")

    assert eligible_touches([viewed], CONVERSION_MS, PARAMS) == []


@pytest.mark.parametrize("touch_class", ["engagement", "checkin"])
def test_eligible_click_class_uses_click_lookback(touch_class: TouchClass) -> None:
    engaged = touch("e1", "a", CONVERSION_MS - 2 * DAY_MS, touch_class)

    assert eligible_touches([engaged], CONVERSION_MS, PARAMS) == [engaged]


@pytest.mark.parametrize("touch_class", ["engagement", "checkin"])
def test_eligible_click_class_past_lookback_excluded(touch_class: TouchClass) -> None:
    engaged = touch("e1", "a", CONVERSION_MS - CLICK_LOOKBACK_MS - 1, touch_class)

    assert eligible_touches([engaged], CONVERSION_MS, PARAMS) == []


def test_eligible_click_beats_newer_view() -> None:
    clicked = touch("c1", "a", CONVERSION_MS - 3 * DAY_MS)
    viewed = touch("v1", "b", CONVERSION_MS - HOUR_MS, "view")

    assert eligible_touches([clicked, viewed], CONVERSION_MS, PARAMS) == [clicked]


@pytest.mark.parametrize("touch_class", ["engagement", "checkin"])
def test_eligible_click_class_beats_view(touch_class: TouchClass) -> None:
    engaged = touch("e1", "a", CONVERSION_MS - 2 * HOUR_MS, touch_class)
    viewed = touch("v1", "b", CONVERSION_MS - HOUR_MS, "view")

    assert eligible_touches([viewed, engaged], CONVERSION_MS, PARAMS) == [engaged]


def test_eligible_expired_click_leaves_views() -> None:
    expired = touch("c1", "a", CONVERSION_MS - CLICK_LOOKBACK_MS - 1)
    viewed = touch("v1", "b", CONVERSION_MS - HOUR_MS, "view")

    assert eligible_touches([expired, viewed], CONVERSION_MS, PARAMS) == [viewed]


def test_eligible_touch_after_conversion_excluded() -> None:
    later_click = touch("c1", "a", CONVERSION_MS + 1)
    later_view = touch("v1", "b", CONVERSION_MS + 1, "view")

    assert eligible_touches([later_click, later_view], CONVERSION_MS, PARAMS) == []


def test_eligible_future_click_keeps_views() -> None:
    later_click = touch("c1", "a", CONVERSION_MS + 1)
    viewed = touch("v1", "b", CONVERSION_MS - HOUR_MS, "view")

    assert eligible_touches([later_click, viewed], CONVERSION_MS, PARAMS) == [viewed]


def test_eligible_touch_at_conversion_time_kept() -> None:
    same_time = touch("c1", "a", CONVERSION_MS)

    assert eligible_touches([same_time], CONVERSION_MS, PARAMS) == [same_time]


def test_eligible_sorted_by_time() -> None:
    newest = touch("a", "x", CONVERSION_MS - HOUR_MS)
    oldest = touch("b", "x", CONVERSION_MS - 3 * HOUR_MS)
    middle = touch("c", "x", CONVERSION_MS - 2 * HOUR_MS)

    chosen = eligible_touches([newest, oldest, middle], CONVERSION_MS, PARAMS)

    assert event_ids(chosen) == ["b", "c", "a"]


def test_eligible_time_tie_sorted_by_event_id() -> None:
    time_ms = CONVERSION_MS - HOUR_MS
    second = touch("e2", "x", time_ms)
    first = touch("e1", "y", time_ms)

    chosen = eligible_touches([second, first], CONVERSION_MS, PARAMS)

    assert event_ids(chosen) == ["e1", "e2"]


def test_eligible_empty_input_returns_empty() -> None:
    assert eligible_touches([], CONVERSION_MS, PARAMS) == []


def test_eligible_leaves_input_order_unchanged() -> None:
    newest = touch("a", "x", CONVERSION_MS - HOUR_MS)
    oldest = touch("b", "x", CONVERSION_MS - 3 * HOUR_MS)
    given_touches = [newest, oldest]

    eligible_touches(given_touches, CONVERSION_MS, PARAMS)

    assert given_touches == [newest, oldest]


# --- single-touch models -------------------------------------------------

THREE_TOUCHES = [
    touch("e1", "first", 1_000),
    touch("e2", "middle", 2_000),
    touch("e3", "last", 3_000),
]


def test_last_touch_credits_last_campaign() -> None:
    assert last_touch(THREE_TOUCHES) == {"last": Decimal(1)}


def test_first_touch_credits_first_campaign() -> None:
    assert first_touch(THREE_TOUCHES) == {"first": Decimal(1)}


# --- linear --------------------------------------------------------------


def test_linear_equal_shares() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "c", 3), touch("e4", "d", 4)]

    weights = linear(touches)

    assert weights == {"a": Decimal("0.25"), "b": Decimal("0.25"), "c": Decimal("0.25"), "d": Decimal("0.25")}


def test_linear_repeated_campaign_counted_per_step() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "a", 3), touch("e4", "c", 4)]

    weights = linear(touches)

    assert weights["a"] == Decimal("0.5")
    assert weights["b"] == Decimal("0.25")
    assert weights["c"] == Decimal("0.25")


def test_linear_single_campaign_gets_all() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "a", 2), touch("e3", "a", 3)]

    assert linear(touches) == {"a": Decimal(1)}


def test_linear_remainder_goes_to_lowest_campaign_id() -> None:
    # Three shares of 0.333...333 (24 digits) leave 1e-24 over. The parts tie, so the lowest id takes it.
    touches = [touch("e1", "c", 1), touch("e2", "a", 2), touch("e3", "b", 3)]

    weights = linear(touches)

    assert weights["a"] == Decimal("0.333333333333333333333334")
    assert weights["b"] == Decimal("0.333333333333333333333333")
    assert weights["c"] == Decimal("0.333333333333333333333333")


def test_linear_remainder_goes_to_largest_part() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "b", 3)]

    weights = linear(touches)

    assert weights["a"] == Decimal("0.333333333333333333333333")
    assert weights["b"] == Decimal("0.666666666666666666666667")


# --- time_decay ----------------------------------------------------------


def test_time_decay_two_touches_hand_computed() -> None:
    # Ages 0 and one half-life: raw weights 1 and 1/2, normalised to 2/3 and 1/3.
    old = touch("e1", "old", CONVERSION_MS - HALF_LIFE_MS)
    fresh = touch("e2", "fresh", CONVERSION_MS)

    weights = time_decay([old, fresh], CONVERSION_MS, HALF_LIFE_MS)

    assert abs(weights["fresh"] - Decimal(2) / Decimal(3)) <= WEIGHT_QUANTUM
    assert abs(weights["old"] - Decimal(1) / Decimal(3)) <= WEIGHT_QUANTUM


def test_time_decay_three_touches_hand_computed() -> None:
    # Ages 0, 1 and 2 half-lives: raw 1, 1/2, 1/4 over a total of 7/4.
    touches = [
        touch("e1", "oldest", CONVERSION_MS - 2 * HALF_LIFE_MS),
        touch("e2", "middle", CONVERSION_MS - HALF_LIFE_MS),
        touch("e3", "fresh", CONVERSION_MS),
    ]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)

    assert abs(weights["fresh"] - Decimal(4) / Decimal(7)) <= WEIGHT_QUANTUM
    assert abs(weights["middle"] - Decimal(2) / Decimal(7)) <= WEIGHT_QUANTUM
    assert abs(weights["oldest"] - Decimal(1) / Decimal(7)) <= WEIGHT_QUANTUM


def test_time_decay_equal_ages_split_evenly() -> None:
    # One half-life keeps the raw weights exact (1/2 each), so no rounding is involved.
    time_ms = CONVERSION_MS - HALF_LIFE_MS
    touches = [touch("e1", "a", time_ms), touch("e2", "b", time_ms)]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)

    assert weights == {"a": Decimal("0.5"), "b": Decimal("0.5")}


def test_time_decay_equal_ages_rounded_split_evenly() -> None:
    time_ms = CONVERSION_MS - DAY_MS
    touches = [touch("e1", "a", time_ms), touch("e2", "b", time_ms)]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)

    assert weights == {"a": Decimal("0.5"), "b": Decimal("0.5")}


def test_time_decay_repeated_campaign_summed() -> None:
    touches = [
        touch("e1", "a", CONVERSION_MS - HALF_LIFE_MS),
        touch("e2", "b", CONVERSION_MS - HALF_LIFE_MS),
        touch("e3", "a", CONVERSION_MS),
    ]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)

    # Raw 1/2 + 1 for a and 1/2 for b, over a total of 2.
    assert weights["a"] == Decimal("0.75")
    assert weights["b"] == Decimal("0.25")


def test_time_decay_depends_only_on_age() -> None:
    shift_ms = 5 * DAY_MS
    touches = [touch("e1", "a", CONVERSION_MS - DAY_MS), touch("e2", "b", CONVERSION_MS - 3 * DAY_MS)]
    shifted = [touch(t.event_id, t.campaign_id, t.time_ms + shift_ms) for t in touches]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)
    shifted_weights = time_decay(shifted, CONVERSION_MS + shift_ms, HALF_LIFE_MS)

    assert shifted_weights == weights


def test_time_decay_newer_touch_weighs_more() -> None:
    touches = [touch("e1", "old", CONVERSION_MS - 3 * DAY_MS), touch("e2", "new", CONVERSION_MS - DAY_MS)]

    weights = time_decay(touches, CONVERSION_MS, HALF_LIFE_MS)

    assert weights["new"] > weights["old"]


def decimal_time_decay(touches: list[StoredTouch], conversion_ms: int, half_life_ms: int) -> dict[str, Decimal]:
    """Compute time-decay weights with 60-digit Decimal powers, unrounded, as a reference."""
    with localcontext(Context(prec=60)):
        raw = [Decimal(2) ** (Decimal(stored.time_ms - conversion_ms) / Decimal(half_life_ms)) for stored in touches]
        total = sum(raw, Decimal(0))
        weights: dict[str, Decimal] = {}
        for stored, value in zip(touches, raw):
            weights[stored.campaign_id] = weights.get(stored.campaign_id, Decimal(0)) + value / total
    return weights


def decay_touches(offsets_ms: list[int], campaign_count: int) -> list[StoredTouch]:
    return sorted(
        (touch(f"e{index}", f"c{index % campaign_count}", CONVERSION_MS - offset) for index, offset in enumerate(offsets_ms)),
        key=lambda stored: (stored.time_ms, stored.event_id),
    )


@given(
    offsets_ms=st.lists(st.integers(min_value=0, max_value=CLICK_LOOKBACK_MS), min_size=1, max_size=40),
    campaign_count=st.integers(min_value=1, max_value=5),
    half_life_ms=st.sampled_from([HOUR_MS, DAY_MS, HALF_LIFE_MS]),
)
def test_time_decay_near_decimal_powers(offsets_ms: list[int], campaign_count: int, half_life_ms: int) -> None:
    # The float decay factors carry about 16 significant digits, and every weight is at most 1.
    touches = decay_touches(offsets_ms, campaign_count)

    weights = time_decay(touches, CONVERSION_MS, half_life_ms)
    reference = decimal_time_decay(touches, CONVERSION_MS, half_life_ms)

    assert set(weights) == set(reference)
    for campaign_id, expected in reference.items():
        assert abs(weights[campaign_id] - expected) <= Decimal("1e-15"), campaign_id


@given(
    offsets_ms=st.lists(st.integers(min_value=0, max_value=CLICK_LOOKBACK_MS), min_size=1, max_size=40),
    campaign_count=st.integers(min_value=1, max_value=5),
    half_life_ms=st.integers(min_value=1_000, max_value=400 * DAY_MS),
    revenue_cents=st.integers(min_value=0, max_value=10**17 - 1),
)
def test_time_decay_sums_exactly(offsets_ms: list[int], campaign_count: int, half_life_ms: int, revenue_cents: int) -> None:
    touches = decay_touches(offsets_ms, campaign_count)
    revenue = Decimal(revenue_cents) / 100

    weights = time_decay(touches, CONVERSION_MS, half_life_ms)
    shares = revenue_shares(weights, revenue)

    assert sum(weights.values(), Decimal(0)) == Decimal(1)
    assert all(weight >= 0 for weight in weights.values())
    assert all(weight == weight.quantize(WEIGHT_QUANTUM) for weight in weights.values())
    # Shares of 15 integer digits and 18 fractional ones need more than Decimal's default 28 digits.
    with localcontext(DECIMAL_CONTEXT):
        assert sum(shares.values(), Decimal(0)) == revenue


def test_time_decay_many_half_lives_old() -> None:
    # With a one-second half-life, touches 39 and 40 days old decay by 2^-3,369,600
    # and 2^-3,456,000. Both are below the smallest Decimal exponent, so 60-digit
    # Decimal powers would round both to 0 and the normalisation would divide by zero.
    touches = [touch("e1", "old", CONVERSION_MS - 40 * DAY_MS), touch("e2", "newer", CONVERSION_MS - 39 * DAY_MS)]

    weights = time_decay(touches, CONVERSION_MS, 1_000)

    assert weights == {"old": Decimal(0), "newer": Decimal(1)}


def test_time_decay_equal_ages_many_half_lives_old() -> None:
    time_ms = CONVERSION_MS - 40 * DAY_MS
    touches = [touch("e1", "a", time_ms), touch("e2", "b", time_ms)]

    weights = time_decay(touches, CONVERSION_MS, 1_000)

    assert weights == {"a": Decimal("0.5"), "b": Decimal("0.5")}


# --- position_based ------------------------------------------------------

FORTY = Decimal("0.4")


def test_position_one_touch_gets_all() -> None:
    weights = position_based([touch("e1", "a", 1)], FORTY, FORTY)

    assert weights == {"a": Decimal(1)}


def test_position_two_touches_split_evenly() -> None:
    weights = position_based([touch("e1", "a", 1), touch("e2", "b", 2)], FORTY, FORTY)

    assert weights == {"a": Decimal("0.5"), "b": Decimal("0.5")}


def test_position_two_touches_ignore_custom_shares() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2)]

    weights = position_based(touches, Decimal("0.3"), Decimal("0.6"))

    assert weights == {"a": Decimal("0.5"), "b": Decimal("0.5")}


def test_position_three_touches_40_20_40() -> None:
    weights = position_based(THREE_TOUCHES, FORTY, FORTY)

    assert weights == {"first": Decimal("0.4"), "middle": Decimal("0.2"), "last": Decimal("0.4")}


def test_position_middle_split_evenly() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "c", 3), touch("e4", "d", 4)]

    weights = position_based(touches, FORTY, FORTY)

    assert weights == {"a": Decimal("0.4"), "b": Decimal("0.1"), "c": Decimal("0.1"), "d": Decimal("0.4")}


def test_position_first_and_last_same_campaign() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "a", 3)]

    weights = position_based(touches, FORTY, FORTY)

    assert weights["a"] == Decimal("0.8")
    assert weights["b"] == Decimal("0.2")


def test_position_custom_shares() -> None:
    touches = [touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "c", 3), touch("e4", "d", 4)]

    weights = position_based(touches, Decimal("0.3"), Decimal("0.5"))

    assert weights == {"a": Decimal("0.3"), "b": Decimal("0.1"), "c": Decimal("0.1"), "d": Decimal("0.5")}


def test_position_zero_middle_share() -> None:
    weights = position_based(THREE_TOUCHES, Decimal("0.5"), Decimal("0.5"))

    assert weights["first"] == Decimal("0.5")
    assert weights["middle"] == 0
    assert weights["last"] == Decimal("0.5")


# --- credit_all_models ---------------------------------------------------

# Touches 1,000,000 ms (about 16.7 minutes) apart, with a one-hour half-life.
SPACING_MS = 1_000_000
SUM_PARAMS = AttributionParams(lookback_click_ms=10**9, lookback_view_ms=500, half_life_ms=HOUR_MS)


def spaced_touches(count: int) -> list[StoredTouch]:
    return [touch(f"e{index}", f"c{index}", index * SPACING_MS) for index in range(count)]


def _sum_cases() -> list[object]:
    cases: list[object] = []
    # Counts 3, 4 and 8 are where unrounded Decimal division left the sum off 1.
    for count in (1, 2, 3, 4, 8):
        for model in ATTRIBUTION_MODELS:
            cases.append(pytest.param(count, model, id=f"{model}-{count}"))
    return cases


@pytest.mark.parametrize(("count", "model"), _sum_cases())
def test_all_models_weights_sum_to_one(count: int, model: AttributionModel) -> None:
    touches = spaced_touches(count)

    weights = credit_all_models(touches, count * SPACING_MS, SUM_PARAMS)

    assert sum(weights[model].values(), Decimal(0)) == Decimal(1)


@given(
    offsets_ms=st.lists(st.integers(min_value=0, max_value=CLICK_LOOKBACK_MS), min_size=1, max_size=40),
    campaign_count=st.integers(min_value=1, max_value=5),
)
def test_all_models_weights_near_one(offsets_ms: list[int], campaign_count: int) -> None:
    touches = sorted(
        (touch(f"e{index}", f"c{index % campaign_count}", CONVERSION_MS - offset) for index, offset in enumerate(offsets_ms)),
        key=lambda stored: (stored.time_ms, stored.event_id),
    )

    credited = credit_all_models(touches, CONVERSION_MS, PARAMS)

    for model in ATTRIBUTION_MODELS:
        total = sum(credited[model].values(), Decimal(0))
        assert abs(total - 1) < Decimal("1e-24"), model
        assert all(weight >= 0 for weight in credited[model].values()), model
        assert set(credited[model]) <= {stored.campaign_id for stored in touches}, model


def test_all_models_returns_every_model() -> None:
    credited = credit_all_models(THREE_TOUCHES, 4_000, PARAMS)

    assert set(credited) == set(ATTRIBUTION_MODELS)


def test_all_models_uses_position_shares() -> None:
    params = AttributionParams(
        lookback_click_ms=CLICK_LOOKBACK_MS,
        lookback_view_ms=VIEW_LOOKBACK_MS,
        half_life_ms=HALF_LIFE_MS,
        position_first_share=Decimal("0.1"),
        position_last_share=Decimal("0.7"),
    )

    credited = credit_all_models(THREE_TOUCHES, 4_000, params)

    assert credited["position_based"] == {"first": Decimal("0.1"), "middle": Decimal("0.2"), "last": Decimal("0.7")}


def test_all_models_uses_half_life() -> None:
    params = AttributionParams(lookback_click_ms=CLICK_LOOKBACK_MS, lookback_view_ms=VIEW_LOOKBACK_MS, half_life_ms=1_000)
    touches = [touch("e1", "old", 3_000), touch("e2", "fresh", 4_000)]

    credited = credit_all_models(touches, 4_000, params)

    assert abs(credited["time_decay"]["fresh"] - Decimal(2) / Decimal(3)) <= WEIGHT_QUANTUM


def test_all_models_empty_touches_raise() -> None:
    with pytest.raises(ValueError, match="at least one touchpoint"):
        credit_all_models([], CONVERSION_MS, PARAMS)


# --- credit_coupon and revenue_shares ------------------------------------


def test_coupon_credits_campaign_under_every_model() -> None:
    credited = credit_coupon("spring-sale")

    assert set(credited) == set(ATTRIBUTION_MODELS)
    for model in ATTRIBUTION_MODELS:
        assert credited[model] == {"spring-sale": Decimal(1)}, model


def test_revenue_shares_split_by_weight() -> None:
    shares = revenue_shares({"a": Decimal("0.75"), "b": Decimal("0.25")}, Decimal("80.00"))

    assert shares == {"a": Decimal("60.00"), "b": Decimal("20.00")}


def test_revenue_shares_halves_sum_to_revenue() -> None:
    revenue = Decimal("19.99")

    shares = revenue_shares({"a": Decimal("0.5"), "b": Decimal("0.5")}, revenue)

    assert sum(shares.values(), Decimal(0)) == revenue


def test_revenue_shares_thirds_sum_to_revenue() -> None:
    revenue = Decimal("100.00")
    weights = linear([touch("e1", "a", 1), touch("e2", "b", 2), touch("e3", "c", 3)])

    shares = revenue_shares(weights, revenue)

    assert sum(shares.values(), Decimal(0)) == revenue


def test_revenue_shares_single_campaign_keeps_revenue_text() -> None:
    shares = revenue_shares({"a": Decimal(1)}, Decimal("19.99"))

    assert str(shares["a"]) == "19.99"


def test_revenue_shares_zero_revenue() -> None:
    shares = revenue_shares({"a": Decimal("0.4"), "b": Decimal("0.6")}, Decimal(0))

    assert shares == {"a": Decimal(0), "b": Decimal(0)}


def test_exact_nests_without_a_new_context() -> None:
    @exact
    def inner() -> Context:
        return getcontext()

    @exact
    def outer() -> tuple[Context, Context]:
        return getcontext(), inner()

    outer_context, inner_context = outer()

    assert inner_context is outer_context
    assert outer_context.prec == DECIMAL_CONTEXT.prec
    assert inner().prec == DECIMAL_CONTEXT.prec
    assert getcontext().prec != DECIMAL_CONTEXT.prec
