"""Attribution models as pure functions over plain data.

The agents call these functions, and the end-to-end tests use them as the
ground truth, so nothing here touches Kafka or Redis.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Callable, Literal, Mapping, ParamSpec, Sequence, TypeVar

from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel

TouchClass = Literal["click", "engagement", "checkin", "view"]
#: Touch classes that use the click lookback window and beat views.
CLICK_CLASSES: frozenset[str] = frozenset({"click", "engagement", "checkin"})

#: Precision of money and weight arithmetic. Decimal's default of 28 digits
#: cannot hold 15 integer digits plus 18 fractional ones, so quantize() on a
#: large amount would raise.
DECIMAL_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)

_P = ParamSpec("_P")
_R = TypeVar("_R")


#: True while an ``exact`` function runs: nested ones then keep its context.
_IN_EXACT: ContextVar[bool] = ContextVar("roitrack_exact", default=False)


def exact(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` under DECIMAL_CONTEXT.

    A call from inside another ``exact`` function runs in the caller's context
    as it is, which saves the context copy that ``localcontext`` makes on every
    call. So code inside an ``exact`` function must not change the decimal
    context before it calls another one.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _IN_EXACT.get():
            return function(*args, **kwargs)
        token = _IN_EXACT.set(True)
        try:
            with localcontext(DECIMAL_CONTEXT):
                return function(*args, **kwargs)
        finally:
            _IN_EXACT.reset(token)

    return wrapper


_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class StoredTouch:
    """A touchpoint as attribution needs it."""

    event_id: str
    campaign_id: str
    touch_class: TouchClass
    time_ms: int


@dataclass(frozen=True, slots=True)
class AttributionParams:
    """The knobs of attribution, taken from the settings."""

    lookback_click_ms: int
    lookback_view_ms: int
    half_life_ms: int
    position_first_share: Decimal = Decimal("0.4")
    position_last_share: Decimal = Decimal("0.4")


Weights = dict[str, Decimal]
"""Credit weight per campaign id; the weights of one model sum to 1."""


def eligible_touches(
    touches: Sequence[StoredTouch], conversion_ms: int, params: AttributionParams
) -> list[StoredTouch]:
    """Select the touchpoints that may be credited for a conversion, oldest first.

    Clicks, check-ins and engagements count inside the click lookback window,
    views inside the view lookback window. A click beats a view: when any
    click-class touch is eligible, views are left out.
    """
    clicks = []
    views = []
    for touch in touches:
        age_ms = conversion_ms - touch.time_ms
        if age_ms < 0:
            continue
        if touch.touch_class in CLICK_CLASSES:
            if age_ms <= params.lookback_click_ms:
                clicks.append(touch)
        elif age_ms <= params.lookback_view_ms:
            views.append(touch)
    chosen = clicks or views
    chosen.sort(key=lambda touch: (touch.time_ms, touch.event_id))
    return chosen


#: Weights are fixed-point with 24 fractional digits and revenue shares with
#: 18, so their sums are exact in any order under DECIMAL_CONTEXT. Decimal's
#: default 28 digits suffice for weights, but not for the shares of amounts
#: with more than 10 integer digits.
WEIGHT_QUANTUM = Decimal("1e-24")
REVENUE_QUANTUM = Decimal("1e-18")


def _close_to(total: Decimal, parts: dict[str, Decimal], quantum: Decimal = WEIGHT_QUANTUM) -> dict[str, Decimal]:
    """Round ``parts`` to ``quantum`` and make them sum to ``total`` exactly.

    Division rounds (three thirds add up to 0.999...9), so the largest part
    (ties: the lowest campaign id) absorbs the remainder.
    """
    if not parts:
        return parts
    largest_id = ""
    largest: Decimal | None = None
    rounded_sum = _ZERO
    for campaign_id, value in parts.items():
        rounded = value.quantize(quantum, rounding=ROUND_HALF_EVEN)
        parts[campaign_id] = rounded
        rounded_sum += rounded
        if largest is None or rounded > largest or (rounded == largest and campaign_id < largest_id):
            largest_id = campaign_id
            largest = rounded
    assert largest is not None  # parts is not empty
    # others is the sum of all parts but the largest. The subtraction is exact
    # because revenue shares have at most 15 integer and 18 fractional digits and
    # weights 1 and 24, far fewer than the 60 digits of DECIMAL_CONTEXT. A lone
    # part subtracts Decimal(0), so the result keeps the exponent of ``total``.
    others = rounded_sum - largest if len(parts) > 1 else _ZERO
    parts[largest_id] = total - others
    return parts


def _add(weights: Weights, campaign_id: str, weight: Decimal) -> None:
    weights[campaign_id] = weights.get(campaign_id, Decimal(0)) + weight


def last_touch(touches: Sequence[StoredTouch]) -> Weights:
    return {touches[-1].campaign_id: _ONE}


def first_touch(touches: Sequence[StoredTouch]) -> Weights:
    return {touches[0].campaign_id: _ONE}


@exact
def linear(touches: Sequence[StoredTouch]) -> Weights:
    return _linear(touches)


def _linear(touches: Sequence[StoredTouch]) -> Weights:
    share = _ONE / len(touches)
    weights: Weights = {}
    for touch in touches:
        _add(weights, touch.campaign_id, share)
    return _close_to(_ONE, weights)


@exact
def time_decay(touches: Sequence[StoredTouch], conversion_ms: int, half_life_ms: int) -> Weights:
    """Weight each touch by 2^(-age / half-life), normalised to sum to 1.

    Normalisation cancels any common factor, so the weights depend only on the
    time between the touches and ``conversion_ms`` does not change them. The
    decay factors are floats, so a weight can differ from the exact value by
    up to about 1e-16. The normalisation and rounding are Decimal, so the
    weights still sum to exactly 1.
    """
    return _time_decay(touches, half_life_ms)


def _time_decay(touches: Sequence[StoredTouch], half_life_ms: int) -> Weights:
    # A float power is thousands of times cheaper than Decimal's non-integer power
    # at 60 digits. The ages count from the newest touch, so its factor is exactly 1
    # and the total cannot underflow to zero, however many half-lives old the touches are.
    newest_ms = max(touch.time_ms for touch in touches)
    raw = [Decimal(2.0 ** ((touch.time_ms - newest_ms) / half_life_ms)) for touch in touches]
    total = sum(raw, Decimal(0))
    weights: Weights = {}
    for touch, value in zip(touches, raw):
        _add(weights, touch.campaign_id, value / total)
    return _close_to(_ONE, weights)


@exact
def position_based(
    touches: Sequence[StoredTouch], first_share: Decimal, last_share: Decimal
) -> Weights:
    """Give the first and last touches fixed shares and split the rest over the middle.

    One touch takes everything; two touches split evenly.
    """
    return _position_based(touches, first_share, last_share)


def _position_based(touches: Sequence[StoredTouch], first_share: Decimal, last_share: Decimal) -> Weights:
    count = len(touches)
    if count == 1:
        return {touches[0].campaign_id: _ONE}
    if count == 2:
        weights: Weights = {}
        _add(weights, touches[0].campaign_id, _ONE / 2)
        _add(weights, touches[1].campaign_id, _ONE / 2)
        return _close_to(_ONE, weights)
    weights = {}
    middle_share = (_ONE - first_share - last_share) / (count - 2)
    _add(weights, touches[0].campaign_id, first_share)
    for touch in touches[1:-1]:
        _add(weights, touch.campaign_id, middle_share)
    _add(weights, touches[-1].campaign_id, last_share)
    return _close_to(_ONE, weights)


@exact
def credit_all_models(
    touches: Sequence[StoredTouch], conversion_ms: int, params: AttributionParams
) -> dict[AttributionModel, Weights]:
    """Credit eligible, time-ordered touches under every model.

    ``touches`` must be non-empty and already filtered by ``eligible_touches``.
    """
    if not touches:
        raise ValueError("credit_all_models needs at least one touchpoint")
    # The undecorated model functions, because DECIMAL_CONTEXT is already active here.
    models: dict[AttributionModel, Weights] = {
        "last_touch": last_touch(touches),
        "first_touch": first_touch(touches),
        "linear": _linear(touches),
        "time_decay": _time_decay(touches, params.half_life_ms),
        "position_based": _position_based(touches, params.position_first_share, params.position_last_share),
    }
    return models


@exact
def credit_coupon(campaign_id: str) -> dict[AttributionModel, Weights]:
    """Credit a coupon's campaign with the whole conversion under every model."""
    return {model: {campaign_id: _ONE} for model in ATTRIBUTION_MODELS}


@exact
def revenue_shares(weights: Mapping[str, Decimal], revenue: Decimal) -> dict[str, Decimal]:
    """Split revenue by weight; the shares sum to the revenue exactly."""
    shares = {campaign_id: revenue * weight for campaign_id, weight in weights.items()}
    return _close_to(revenue, shares, REVENUE_QUANTUM)
