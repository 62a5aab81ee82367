"""Engagement figures per campaign: counts, impressions, rates and follower growth."""

from __future__ import annotations

from decimal import Decimal

import pytest

from roitrack.engagement import EngagementAggregate, ImpressionsRecord, Snapshot, follower_change, ratio

HOUR_MS = 3_600_000
T0 = 1_793_613_600_000  # 2026-11-02T10:00:00Z
WINDOWS = (3600, 86400)


def test_ratio_rounds_to_six_places() -> None:
    assert ratio(Decimal(1), Decimal(3)) == Decimal("0.333333")


def test_ratio_none_without_denominator() -> None:
    assert ratio(Decimal(5), Decimal(0)) is None


def test_lifetime_counts_by_kind() -> None:
    aggregate = EngagementAggregate()
    for kind in ("like", "like", "share", "comment", "follow"):
        aggregate.add_engagement(kind, T0, WINDOWS)

    figures = aggregate.figures(None, T0, Decimal(0))

    assert figures.counts == {"like": 2, "share": 1, "comment": 1, "follow": 1}
    assert figures.total == 5


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError, match="unknown engagement kind 'view'"):
        EngagementAggregate().add_engagement("view", T0, WINDOWS)


def test_window_excludes_older_engagement() -> None:
    aggregate = EngagementAggregate()
    aggregate.add_engagement("like", T0 - 2 * HOUR_MS, WINDOWS)
    aggregate.add_engagement("like", T0, WINDOWS)

    assert aggregate.figures(3600, T0, Decimal(0)).total == 1
    assert aggregate.figures(86400, T0, Decimal(0)).total == 2
    assert aggregate.figures(None, T0, Decimal(0)).total == 2


def test_rate_and_cost_per_engagement() -> None:
    aggregate = EngagementAggregate()
    for _ in range(4):
        aggregate.add_engagement("comment", T0, WINDOWS)
    aggregate.set_impressions("i1", ImpressionsRecord(200, T0 - HOUR_MS, T0))

    figures = aggregate.figures(None, T0, Decimal(10))

    assert figures.impressions == 200
    assert figures.engagement_rate == Decimal("0.02")
    assert figures.cost_per_engagement == Decimal("2.5")


def test_rates_null_without_denominators() -> None:
    figures = EngagementAggregate().figures(None, T0, Decimal(10))

    assert figures.engagement_rate is None
    assert figures.cost_per_engagement is None


def test_repeated_impressions_id_replaces() -> None:
    aggregate = EngagementAggregate()
    aggregate.set_impressions("i1", ImpressionsRecord(100, T0 - HOUR_MS, T0))
    aggregate.set_impressions("i1", ImpressionsRecord(150, T0 - HOUR_MS, T0))

    assert aggregate.figures(None, T0, Decimal(0)).impressions == 150


def test_window_impressions_prorated() -> None:
    aggregate = EngagementAggregate()
    # Ten impressions a minute for two hours. T0 starts a bucket, so the one-hour
    # window ending there covers its 59 earlier buckets of one minute each.
    aggregate.set_impressions("i1", ImpressionsRecord(1200, T0 - 2 * HOUR_MS, T0))

    assert aggregate.figures(3600, T0, Decimal(0)).impressions == 590


def test_follower_change_lifetime() -> None:
    series = [Snapshot(T0, 100), Snapshot(T0 + HOUR_MS, 130), Snapshot(T0 + 2 * HOUR_MS, 125)]

    assert follower_change(series, None, None) == (25, 125)


def test_follower_change_uses_count_before_window() -> None:
    series = [Snapshot(T0, 100), Snapshot(T0 + HOUR_MS, 130), Snapshot(T0 + 2 * HOUR_MS, 160)]

    assert follower_change(series, T0 + HOUR_MS + 1, T0 + 2 * HOUR_MS) == (30, 160)


def test_follower_change_none_without_snapshots() -> None:
    assert follower_change([Snapshot(T0 + HOUR_MS, 100)], None, T0) is None


def test_follower_growth_sums_series() -> None:
    aggregate = EngagementAggregate()
    aggregate.set_snapshot("instagram", "shop", "a1", Snapshot(T0, 1000))
    aggregate.set_snapshot("instagram", "shop", "a2", Snapshot(T0 + HOUR_MS, 1040))
    aggregate.set_snapshot("tiktok", None, "b1", Snapshot(T0, 50))
    aggregate.set_snapshot("tiktok", None, "b2", Snapshot(T0 + HOUR_MS, 45))

    figures = aggregate.figures(None, T0 + HOUR_MS, Decimal(0))

    assert figures.follower_growth == 35
    assert figures.followers == 1085


def test_prune_keeps_first_and_base_snapshots() -> None:
    aggregate = EngagementAggregate()
    for hour in range(48):
        aggregate.set_snapshot("x", None, f"s{hour}", Snapshot(T0 + hour * HOUR_MS, 100 + hour))
    now_ms = T0 + 47 * HOUR_MS
    before = [aggregate.figures(window_s, now_ms, Decimal(0)).follower_growth for window_s in (None, 3600)]

    aggregate.prune(now_ms, 3600)

    after = [aggregate.figures(window_s, now_ms, Decimal(0)).follower_growth for window_s in (None, 3600)]
    assert after == before
    assert len(aggregate.snapshots["x\x1f"]) < 48


def test_json_round_trip() -> None:
    aggregate = EngagementAggregate()
    aggregate.add_engagement("share", T0, WINDOWS)
    aggregate.set_impressions("i1", ImpressionsRecord(10, T0, T0 + HOUR_MS))
    aggregate.set_snapshot("instagram", "shop", "a1", Snapshot(T0, 7))

    restored = EngagementAggregate.from_json(aggregate.to_json())

    assert restored.figures(3600, T0, Decimal(1)) == aggregate.figures(3600, T0, Decimal(1))
    assert restored.figures(None, T0, Decimal(1)) == aggregate.figures(None, T0, Decimal(1))
