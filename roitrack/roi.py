"""Per-campaign ROI aggregates: pure data and arithmetic, no I/O.

A ``CampaignAggregate`` contains a campaign's lifetime totals, its spend
records, and per-window buckets of attributed conversions and revenue.
Rolling windows are measured in event time and end at ``now_ms``, which the
caller sets to the latest conversion event time it has seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable

from roitrack.attribution import exact
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel

#: Each rolling window is kept as this many buckets, so a window's edge is
#: accurate to 1/60 of its length (one minute for the one-hour window).
BUCKETS_PER_WINDOW = 60
_ZERO = Decimal(0)
_METRIC_PLACES = Decimal("0.000001")
#: Decimal places of the spend and revenue that RoiUpdates and the query API publish, the same as
#: the metrics. Aggregates and history buckets in Redis keep the exact sums.
MONEY_PLACES = Decimal("0.000001")


def window_bucket_ms(window_s: int) -> int:
    """Return the length of one bucket of a rolling window, in milliseconds."""
    return window_s * 1000 // BUCKETS_PER_WINDOW


def shared_bucket_ms(windows_s: Iterable[int], history_bucket_s: int) -> int:
    """Return the longest span length whose aligned spans each lie inside one bucket of every window and of the history.

    That is the greatest common divisor of the bucket lengths: one minute for
    the default windows and history buckets.
    """
    return math.gcd(history_bucket_s * 1000, *(window_bucket_ms(window_s) for window_s in windows_s))


def _zero_by_model() -> dict[AttributionModel, Decimal]:
    return {model: _ZERO for model in ATTRIBUTION_MODELS}


@dataclass(slots=True)
class ModelTotals:
    """Attributed conversions and revenue per model."""

    conversions: dict[AttributionModel, Decimal] = field(default_factory=_zero_by_model)
    revenue: dict[AttributionModel, Decimal] = field(default_factory=_zero_by_model)
    # The JSON form until the next add(): the ROI agent writes a campaign's whole
    # aggregate after each batch, and most of its buckets did not change.
    _json: dict[str, dict[str, str]] | None = field(default=None, repr=False, compare=False)

    @exact
    def add(self, weights: dict[AttributionModel, Decimal], revenue: dict[AttributionModel, Decimal]) -> None:
        self._json = None
        for model, weight in weights.items():
            self.conversions[model] += weight
        for model, amount in revenue.items():
            self.revenue[model] += amount

    def merge(self, other: "ModelTotals") -> None:
        self.add(other.conversions, other.revenue)

    def to_json(self) -> dict[str, dict[str, str]]:
        """Return the JSON form; callers must not change it."""
        if self._json is None:
            self._json = {
                "c": {model: str(value) for model, value in self.conversions.items() if value},
                "r": {model: str(value) for model, value in self.revenue.items() if value},
            }
        return self._json

    @classmethod
    def from_json(cls, data: dict[str, dict[str, str]]) -> "ModelTotals":
        totals = cls()
        for model, text in data.get("c", {}).items():
            totals.conversions[model] = Decimal(text)  # type: ignore[index]  # keys were written from AttributionModel
        for model, text in data.get("r", {}).items():
            totals.revenue[model] = Decimal(text)  # type: ignore[index]  # keys were written from AttributionModel
        return totals


#: One credit's share of a sum: (campaign id, event time in ms, weights, revenue).
CreditFigures = tuple[str, int, dict[AttributionModel, Decimal], dict[AttributionModel, Decimal]]


@exact
def sum_by_span(credits: Iterable[CreditFigures], span_ms: int) -> dict[tuple[str, int], ModelTotals]:
    """Sum credits per campaign and aligned span of ``span_ms``; key each sum by (campaign id, span start).

    With ``span_ms`` from ``shared_bucket_ms``, adding a span's sum at its start
    puts it in the same window and history buckets as adding each credit at its
    own time, with one addition per bucket instead of one per credit. The
    attribution agent writes at most 21 integer digits, 24 fractional digits for
    weights and 18 for revenue. Under DECIMAL_CONTEXT such sums are exact, and a
    sum keeps the smallest exponent of its parts. So the totals come out digit
    for digit the same.
    """
    sums: dict[tuple[str, int], ModelTotals] = {}
    for campaign_id, time_ms, weights, revenue in credits:
        key = (campaign_id, time_ms - time_ms % span_ms)
        totals = sums.get(key)
        if totals is None:
            totals = sums[key] = ModelTotals()
        totals.add(weights, revenue)
    return sums


@dataclass(frozen=True, slots=True)
class SpendRecord:
    """Spend spread evenly over [start_ms, end_ms)."""

    amount: Decimal
    start_ms: int
    end_ms: int

    @exact
    def within(self, start_ms: int, end_ms: int) -> Decimal:
        """Return the part of this spend that falls in [start_ms, end_ms)."""
        overlap_ms = min(end_ms, self.end_ms) - max(start_ms, self.start_ms)
        if overlap_ms <= 0:
            return _ZERO
        return self.amount * Decimal(overlap_ms) / Decimal(self.end_ms - self.start_ms)


@dataclass(frozen=True, slots=True)
class Figures:
    """A campaign's figures in one window, ready to publish."""

    spend: Decimal
    margin: Decimal | None
    totals: ModelTotals


@dataclass(slots=True)
class CampaignAggregate:
    """Everything needed to report one campaign's ROI."""

    campaign_id: str
    name: str | None = None
    margin: Decimal | None = None
    channel: str | None = None
    lifetime: ModelTotals = field(default_factory=ModelTotals)
    spend: dict[str, SpendRecord] = field(default_factory=dict)
    # window_s -> bucket start (ms) -> totals
    buckets: dict[int, dict[int, ModelTotals]] = field(default_factory=dict)

    def set_campaign(self, name: str, margin: Decimal, channel: str | None = None) -> None:
        self.name = name
        self.margin = margin
        self.channel = channel

    def set_spend(self, spend_id: str, record: SpendRecord) -> None:
        """Record spend; a repeated spend id replaces the earlier record, so replays and corrections are idempotent."""
        self.spend[spend_id] = record

    @exact
    def add_credit(
        self,
        time_ms: int,
        weights: dict[AttributionModel, Decimal],
        revenue: dict[AttributionModel, Decimal],
        windows_s: tuple[int, ...],
    ) -> None:
        self.lifetime.add(weights, revenue)
        for window_s in windows_s:
            bucket_ms = window_bucket_ms(window_s)
            start_ms = time_ms - time_ms % bucket_ms
            window_buckets = self.buckets.setdefault(window_s, {})
            bucket = window_buckets.get(start_ms)
            if bucket is None:
                bucket = window_buckets[start_ms] = ModelTotals()
            bucket.add(weights, revenue)

    def prune(self, now_ms: int) -> None:
        """Drop buckets that no longer overlap their window ending at ``now_ms``."""
        for window_s, window_buckets in self.buckets.items():
            bucket_ms = window_bucket_ms(window_s)
            oldest_ms = now_ms - window_s * 1000 - bucket_ms
            for start_ms in [start for start in window_buckets if start < oldest_ms]:
                del window_buckets[start_ms]

    @exact
    def lifetime_spend(self) -> Decimal:
        return sum((record.amount for record in self.spend.values()), _ZERO)

    @exact
    def figures(self, window_s: int | None, now_ms: int) -> Figures:
        """Sum the figures of a rolling window ending at ``now_ms``, or of the lifetime."""
        if window_s is None:
            return Figures(self.lifetime_spend(), self.margin, self.lifetime)
        bucket_ms = window_bucket_ms(window_s)
        # The window is the last BUCKETS_PER_WINDOW buckets, the current one included.
        current_start_ms = now_ms - now_ms % bucket_ms
        first_start_ms = current_start_ms - (BUCKETS_PER_WINDOW - 1) * bucket_ms
        totals = ModelTotals()
        for start_ms, bucket in self.buckets.get(window_s, {}).items():
            if first_start_ms <= start_ms <= current_start_ms:
                totals.merge(bucket)
        spend = sum(
            (record.within(first_start_ms, now_ms) for record in self.spend.values()), _ZERO
        )
        return Figures(spend, self.margin, totals)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id,
            "name": self.name,
            "channel": self.channel,
            "margin": None if self.margin is None else str(self.margin),
            "life": self.lifetime.to_json(),
            "spend": {
                spend_id: [str(record.amount), record.start_ms, record.end_ms]
                for spend_id, record in self.spend.items()
            },
            "buckets": {
                str(window_s): {str(start): totals.to_json() for start, totals in window_buckets.items()}
                for window_s, window_buckets in self.buckets.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CampaignAggregate":
        return cls(
            campaign_id=data["id"],
            name=data.get("name"),
            channel=data.get("channel"),
            margin=None if data.get("margin") is None else Decimal(data["margin"]),
            lifetime=ModelTotals.from_json(data.get("life", {})),
            spend={
                spend_id: SpendRecord(Decimal(amount), int(start_ms), int(end_ms))
                for spend_id, (amount, start_ms, end_ms) in data.get("spend", {}).items()
            },
            buckets={
                int(window_s): {int(start): ModelTotals.from_json(totals) for start, totals in window_buckets.items()}
                for window_s, window_buckets in data.get("buckets", {}).items()
            },
        )


@dataclass(frozen=True, slots=True)
class RoiMetrics:
    roi: Decimal | None
    roas: Decimal | None
    cpa: Decimal | None


@exact
def roi_metrics(
    revenue: Decimal, conversions: Decimal, spend: Decimal, margin: Decimal | None
) -> RoiMetrics:
    """Compute ROI, ROAS and CPA; each is None where its denominator is 0 or margin unknown.

    ROI = (revenue x margin - spend) / spend, ROAS = revenue / spend,
    CPA = spend / conversions. Results are rounded to 6 decimal places.
    """
    roi = roas = cpa = None
    if spend > 0:
        roas = (revenue / spend).quantize(_METRIC_PLACES)
        if margin is not None:
            roi = ((revenue * margin - spend) / spend).quantize(_METRIC_PLACES)
    if conversions > 0:
        cpa = (spend / conversions).quantize(_METRIC_PLACES)
    return RoiMetrics(roi, roas, cpa)


@exact
def round_money(value: Decimal) -> Decimal:
    """Round a published spend or revenue figure to MONEY_PLACES, half to even as the metrics are."""
    return value.quantize(MONEY_PLACES, rounding=ROUND_HALF_EVEN)


def window_label(window_s: int | None) -> str:
    """Label a window for humans and topic consumers: 3600 -> '1h', None -> 'lifetime'."""
    if window_s is None:
        return "lifetime"
    if window_s % 86400 == 0:
        return f"{window_s // 86400}d" if window_s != 86400 else "24h"
    if window_s % 3600 == 0:
        return f"{window_s // 3600}h"
    return f"{window_s // 60}m"
