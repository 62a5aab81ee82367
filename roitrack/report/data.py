"""The Redis reads of `roitrack report`, and the figures computed from them.

It reads every campaign's aggregate (name, margin, spend records, lifetime
totals) and its history buckets (``roitrack.history``) from each campaign
partition. A period's figures come from the history buckets; without
--since and --until, the table shows the aggregates' lifetime totals, which
also count credits applied before the history existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson

from roitrack.connections import sync_redis_client
from roitrack.history import Period, SeriesPoint, bucket_end_ms, bucket_start_ms, decode_history, period_spend, period_totals, roi_series
from roitrack.roi import CampaignAggregate, ModelTotals, RoiMetrics, SpendRecord, roi_metrics
from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel
from streams.state import Keys


@dataclass(frozen=True, slots=True)
class CampaignHistory:
    """One campaign as stored in Redis."""

    campaign_id: str
    name: str | None
    margin: Decimal | None
    spend: tuple[SpendRecord, ...]
    lifetime: ModelTotals
    buckets: dict[int, ModelTotals]

    @property
    def label(self) -> str:
        return self.name or self.campaign_id


@dataclass(frozen=True, slots=True)
class CampaignFigures:
    """A campaign's figures over the report's period, and its ROI over time."""

    campaign: CampaignHistory
    spend: Decimal
    totals: ModelTotals
    metrics: dict[AttributionModel, RoiMetrics]
    series: list[SeriesPoint]


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report shows."""

    period: Period
    bucket_s: int
    currency: str
    namespace: str
    generated_at: datetime
    campaigns: list[CampaignFigures]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_campaigns(settings: Settings, client: Any | None = None) -> list[CampaignHistory]:
    """Read every campaign's aggregate and history buckets, over all campaign partitions."""
    keys = Keys(settings.redis_namespace)
    owned = client is None
    redis = sync_redis_client(settings) if client is None else client
    campaigns: list[CampaignHistory] = []
    try:
        for partition in range(settings.campaign_partitions):
            campaign_ids = sorted(_text(member) for member in redis.smembers(keys.campaign_index(partition)))
            if not campaign_ids:
                continue
            pipe = redis.pipeline(transaction=False)
            for campaign_id in campaign_ids:
                pipe.get(keys.campaign(partition, campaign_id))
                pipe.hgetall(keys.history(partition, campaign_id))
            results = pipe.execute()
            for campaign_id, raw, history in zip(campaign_ids, results[::2], results[1::2]):
                if raw is None:
                    continue
                aggregate = CampaignAggregate.from_json(orjson.loads(raw))
                campaigns.append(CampaignHistory(
                    campaign_id=campaign_id,
                    name=aggregate.name,
                    margin=aggregate.margin,
                    spend=tuple(aggregate.spend.values()),
                    lifetime=aggregate.lifetime,
                    buckets=decode_history(history),
                ))
    finally:
        if owned:
            redis.close()
    campaigns.sort(key=lambda campaign: (campaign.label.lower(), campaign.campaign_id))
    return campaigns


def series_span(campaigns: list[CampaignHistory], period: Period, bucket_s: int) -> tuple[int, int] | None:
    """Return the [start, end) of the ROI-over-time chart in ms, on bucket edges, or None when there is no data.

    An open start becomes the earliest bucket or spend record, and an open end the end of the latest bucket.
    """
    starts = [start for campaign in campaigns for start in campaign.buckets]
    spend_starts = [record.start_ms for campaign in campaigns for record in campaign.spend]
    start_ms = period.start_ms
    if start_ms is None:
        if not starts and not spend_starts:
            return None
        start_ms = bucket_start_ms(min(starts + spend_starts), bucket_s)
    end_ms = period.end_ms
    if end_ms is None:
        if not starts:
            return None
        end_ms = bucket_end_ms(max(starts) + 1, bucket_s)
    if end_ms <= start_ms:
        return None
    return start_ms, end_ms


def campaign_figures(
    campaign: CampaignHistory, period: Period, span: tuple[int, int] | None, bucket_s: int,
) -> CampaignFigures:
    """Compute a campaign's figures for an aligned period, and its series over ``span``."""
    if period.bounded:
        totals = period_totals(campaign.buckets, period)
        spend = period_spend(campaign.spend, period)
    else:
        totals = campaign.lifetime
        spend = period_spend(campaign.spend, Period())
    metrics = {
        model: roi_metrics(totals.revenue[model], totals.conversions[model], spend, campaign.margin)
        for model in ATTRIBUTION_MODELS
    }
    # Without an end, the series' last point counts the whole spend from its start on, as the table does.
    series = [] if span is None else roi_series(
        campaign.buckets, campaign.spend, campaign.margin, span[0], span[1], bucket_s,
        open_end=period.end_ms is None,
    )
    return CampaignFigures(campaign, spend, totals, metrics, series)


def build_report_data(settings: Settings, period: Period, client: Any | None = None) -> ReportData:
    """Read Redis and compute the report's figures, with the period widened to whole history buckets."""
    bucket_s = settings.roi_history_bucket_s
    aligned = period.aligned(bucket_s)
    campaigns = read_campaigns(settings, client)
    span = series_span(campaigns, aligned, bucket_s)
    return ReportData(
        period=aligned,
        bucket_s=bucket_s,
        currency=settings.reporting_currency,
        namespace=settings.redis_namespace,
        generated_at=datetime.now(timezone.utc),
        campaigns=[campaign_figures(campaign, aligned, span, bucket_s) for campaign in campaigns],
    )
