"""A campaign's ROI history in event-time buckets: pure data and arithmetic, no I/O.

The ROI agent adds every credit it applies to the bucket that contains the
conversion's event time. The buckets of one campaign live in one Redis hash
(``streams.state.Keys.history``): the field is the bucket's start in epoch
milliseconds and the value is the bucket's ``ModelTotals`` as JSON. Unlike the
rolling-window buckets of ``CampaignAggregate``, these are never pruned, so
``roitrack report`` can compute the figures of any period and the ROI over time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import orjson

from roitrack.attribution import exact
from roitrack.roi import ModelTotals, RoiMetrics, SpendRecord, roi_metrics
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel

#: Open ends of a period: far outside any event time, so SpendRecord.within keeps whole records.
UNBOUNDED_START_MS = -(2**62)
UNBOUNDED_END_MS = 2**62
#: Maximum points of one ROI series. A longer period is sampled every few buckets.
MAX_SERIES_POINTS = 2000


def bucket_start_ms(time_ms: int, bucket_s: int) -> int:
    """Return the start of the history bucket that contains ``time_ms``."""
    bucket_ms = bucket_s * 1000
    return time_ms - time_ms % bucket_ms


def bucket_end_ms(time_ms: int, bucket_s: int) -> int:
    """Return the first bucket edge at or after ``time_ms``."""
    start_ms = bucket_start_ms(time_ms, bucket_s)
    return start_ms if start_ms == time_ms else start_ms + bucket_s * 1000


@dataclass(frozen=True, slots=True)
class HistoryCredit:
    """The part of a credit that the history keeps."""

    campaign_id: str
    time_ms: int
    weights: Mapping[AttributionModel, Decimal]
    revenue: Mapping[AttributionModel, Decimal]


def history_increments(credits: Iterable[HistoryCredit], bucket_s: int) -> dict[str, dict[int, ModelTotals]]:
    """Sum credits per campaign and bucket start: the amounts to add to the stored buckets."""
    increments: dict[str, dict[int, ModelTotals]] = {}
    for credit in credits:
        buckets = increments.setdefault(credit.campaign_id, {})
        start_ms = bucket_start_ms(credit.time_ms, bucket_s)
        totals = buckets.get(start_ms)
        if totals is None:
            totals = buckets[start_ms] = ModelTotals()
        totals.add(dict(credit.weights), dict(credit.revenue))
    return increments


def encode_totals(totals: ModelTotals) -> bytes:
    return orjson.dumps(totals.to_json())


def decode_totals(raw: bytes | str | None) -> ModelTotals:
    """Decode a stored bucket. A missing bucket decodes to all zeros."""
    if raw is None:
        return ModelTotals()
    return ModelTotals.from_json(orjson.loads(raw))


def decode_history(raw: Mapping[bytes | str, bytes | str]) -> dict[int, ModelTotals]:
    """Decode a whole history hash (HGETALL) into bucket start -> totals."""
    return {int(start): decode_totals(value) for start, value in raw.items()}


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open event-time period [start_ms, end_ms), where None is an open end."""

    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def bounded(self) -> bool:
        return self.start_ms is not None or self.end_ms is not None

    def aligned(self, bucket_s: int) -> "Period":
        """Widen the period to whole history buckets, which is the precision of the history."""
        start_ms = None if self.start_ms is None else bucket_start_ms(self.start_ms, bucket_s)
        end_ms = None if self.end_ms is None else bucket_end_ms(self.end_ms, bucket_s)
        return Period(start_ms, end_ms)

    def contains(self, time_ms: int) -> bool:
        if self.start_ms is not None and time_ms < self.start_ms:
            return False
        return self.end_ms is None or time_ms < self.end_ms


@exact
def period_totals(buckets: Mapping[int, ModelTotals], period: Period) -> ModelTotals:
    """Sum the buckets whose start lies inside the period."""
    totals = ModelTotals()
    for start_ms, bucket in buckets.items():
        if period.contains(start_ms):
            totals.merge(bucket)
    return totals


@exact
def period_spend(spend: Iterable[SpendRecord], period: Period) -> Decimal:
    """Return the part of the spend that falls inside the period, with each record spread evenly over its own period."""
    start_ms = UNBOUNDED_START_MS if period.start_ms is None else period.start_ms
    end_ms = UNBOUNDED_END_MS if period.end_ms is None else period.end_ms
    return sum((record.within(start_ms, end_ms) for record in spend), Decimal(0))


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """A campaign's figures from the start of a series up to ``time_ms``."""

    time_ms: int
    spend: Decimal
    metrics: dict[AttributionModel, RoiMetrics]


@exact
def roi_series(
    buckets: Mapping[int, ModelTotals],
    spend: Iterable[SpendRecord],
    margin: Decimal | None,
    start_ms: int,
    end_ms: int,
    bucket_s: int,
    *,
    open_end: bool = False,
) -> list[SeriesPoint]:
    """Compute the cumulative ROI, ROAS and CPA from ``start_ms`` at each bucket edge up to ``end_ms``.

    Both ends must lie on bucket edges. Each point counts the buckets that
    start in [start_ms, point) and the spend inside that span, so the last
    point carries the figures of the whole span. With ``open_end`` (a period
    without an end) the last point also counts the spend after ``end_ms``, as
    ``period_spend`` of an open period does, because spend booked for later
    is committed money.
    """
    bucket_ms = bucket_s * 1000
    records = list(spend)
    count = max(0, (end_ms - start_ms) // bucket_ms)
    step = max(1, -(-count // MAX_SERIES_POINTS))
    edges = list(range(start_ms + step * bucket_ms, end_ms + 1, step * bucket_ms))
    if not edges or edges[-1] != end_ms:
        edges.append(end_ms)
    ordered = sorted((start, bucket) for start, bucket in buckets.items() if start_ms <= start < end_ms)

    points: list[SeriesPoint] = []
    running = ModelTotals()
    index = 0
    for edge_ms in edges:
        while index < len(ordered) and ordered[index][0] < edge_ms:
            running.merge(ordered[index][1])
            index += 1
        spend_end_ms = UNBOUNDED_END_MS if open_end and edge_ms == end_ms else edge_ms
        spent = sum((record.within(start_ms, spend_end_ms) for record in records), Decimal(0))
        metrics = {
            model: roi_metrics(running.revenue[model], running.conversions[model], spent, margin)
            for model in ATTRIBUTION_MODELS
        }
        points.append(SeriesPoint(edge_ms, spent, metrics))
    return points
