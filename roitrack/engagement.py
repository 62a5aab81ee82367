"""Per-campaign engagement: pure data and arithmetic, no I/O.

An ``EngagementAggregate`` contains a campaign's engagement counts per kind
(lifetime and in per-window buckets), the impressions that ad platforms
reported, and follower-count snapshots per account and channel. Windows are
measured in event time and end at ``now_ms``, like the ROI windows in
``roitrack.roi``, and use the same 60 buckets per window.

Impressions come from ``Impressions`` reports only. View touches are
attribution touchpoints, and counting them as impressions too would count an
impression twice whenever the platform also reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from roitrack.attribution import exact
from roitrack.roi import BUCKETS_PER_WINDOW
from schemas.events import ENGAGEMENT_KINDS

_ZERO = Decimal(0)
_METRIC_PLACES = Decimal("0.000001")


def _zero_counts() -> dict[str, int]:
    return {kind: 0 for kind in ENGAGEMENT_KINDS}


@exact
def ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    """Divide and round to 6 decimal places; None when the denominator is 0."""
    if denominator <= 0:
        return None
    return (numerator / denominator).quantize(_METRIC_PLACES)


@dataclass(frozen=True, slots=True)
class ImpressionsRecord:
    """Impressions spread evenly over [start_ms, end_ms)."""

    count: int
    start_ms: int
    end_ms: int

    @exact
    def within(self, start_ms: int, end_ms: int) -> Decimal:
        """Return the part of the count that falls in [start_ms, end_ms)."""
        overlap_ms = min(end_ms, self.end_ms) - max(start_ms, self.start_ms)
        if overlap_ms <= 0:
            return _ZERO
        return Decimal(self.count) * Decimal(overlap_ms) / Decimal(self.end_ms - self.start_ms)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One follower count of one account and channel."""

    observed_ms: int
    followers: int


@dataclass(frozen=True, slots=True)
class EngagementFigures:
    """A campaign's engagement in one window."""

    counts: dict[str, int]
    total: int
    impressions: int
    engagement_rate: Decimal | None
    cost_per_engagement: Decimal | None
    follower_growth: int
    followers: int | None


def follower_change(snapshots: list[Snapshot], start_ms: int | None, end_ms: int | None) -> tuple[int, int] | None:
    """Return (growth, latest count) of one series in a window, or None when it has no snapshot there.

    The latest snapshot at or before ``end_ms`` is compared with the latest one
    before ``start_ms``, or, when there is none, with the earliest one in the
    window. ``None`` bounds mean the lifetime.
    """
    ordered = sorted(snapshots, key=lambda snapshot: snapshot.observed_ms)
    upto = [snapshot for snapshot in ordered if end_ms is None or snapshot.observed_ms <= end_ms]
    if not upto:
        return None
    last = upto[-1]
    before = [snapshot for snapshot in upto if start_ms is not None and snapshot.observed_ms < start_ms]
    # Without a snapshot before the window, every snapshot up to its end lies inside it.
    base = before[-1] if before else upto[0]
    return last.followers - base.followers, last.followers


@dataclass(slots=True)
class EngagementAggregate:
    """Everything needed to report one campaign's engagement."""

    lifetime: dict[str, int] = field(default_factory=_zero_counts)
    # window_s -> bucket start (ms) -> kind -> count
    buckets: dict[int, dict[int, dict[str, int]]] = field(default_factory=dict)
    impressions: dict[str, ImpressionsRecord] = field(default_factory=dict)
    # series ("channel\x1faccount") -> snapshot id -> snapshot
    snapshots: dict[str, dict[str, Snapshot]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.lifetime.values()) and not self.impressions and not self.snapshots

    def add_engagement(self, kind: str, time_ms: int, windows_s: tuple[int, ...]) -> None:
        if kind not in self.lifetime:
            raise ValueError(f"unknown engagement kind {kind!r}; expected one of {list(ENGAGEMENT_KINDS)}")
        self.lifetime[kind] += 1
        for window_s in windows_s:
            bucket_ms = window_s * 1000 // BUCKETS_PER_WINDOW
            start_ms = time_ms - time_ms % bucket_ms
            counts = self.buckets.setdefault(window_s, {}).setdefault(start_ms, {})
            counts[kind] = counts.get(kind, 0) + 1

    def set_impressions(self, impressions_id: str, record: ImpressionsRecord) -> None:
        """Record a report; a repeated id replaces the earlier report."""
        self.impressions[impressions_id] = record

    def set_snapshot(self, channel: str, account_id: str | None, snapshot_id: str, snapshot: Snapshot) -> None:
        """Record a follower count; a repeated snapshot id replaces the earlier one."""
        series = f"{channel}\x1f{account_id or ''}"
        self.snapshots.setdefault(series, {})[snapshot_id] = snapshot

    def prune(self, now_ms: int, longest_window_s: int) -> None:
        """Drop buckets outside their window, and snapshots no window or lifetime figure needs."""
        for window_s, window_buckets in self.buckets.items():
            bucket_ms = window_s * 1000 // BUCKETS_PER_WINDOW
            oldest_ms = now_ms - window_s * 1000 - bucket_ms
            for start_ms in [start for start in window_buckets if start < oldest_ms]:
                del window_buckets[start_ms]
        cutoff_ms = now_ms - longest_window_s * 1000 - longest_window_s * 1000 // BUCKETS_PER_WINDOW
        for series in self.snapshots.values():
            ordered = sorted(series.items(), key=lambda item: (item[1].observed_ms, item[0]))
            old = [snapshot_id for snapshot_id, snapshot in ordered if snapshot.observed_ms < cutoff_ms]
            # Keep the first snapshot (lifetime growth) and the last old one (the base of every window).
            for snapshot_id in old[1:-1]:
                del series[snapshot_id]

    @exact
    def figures(self, window_s: int | None, now_ms: int, spend: Decimal) -> EngagementFigures:
        """Sum the engagement of a rolling window ending at ``now_ms``, or of the lifetime."""
        if window_s is None:
            counts = dict(self.lifetime)
            impressions = Decimal(sum(record.count for record in self.impressions.values()))
            start_ms: int | None = None
            end_ms: int | None = None
        else:
            bucket_ms = window_s * 1000 // BUCKETS_PER_WINDOW
            current_start_ms = now_ms - now_ms % bucket_ms
            first_start_ms = current_start_ms - (BUCKETS_PER_WINDOW - 1) * bucket_ms
            counts = _zero_counts()
            for bucket_start_ms, bucket in self.buckets.get(window_s, {}).items():
                if first_start_ms <= bucket_start_ms <= current_start_ms:
                    for kind, count in bucket.items():
                        counts[kind] += count
            impressions = sum(
                (record.within(first_start_ms, now_ms) for record in self.impressions.values()), _ZERO
            )
            start_ms, end_ms = first_start_ms, now_ms
        total = sum(counts.values())
        impressions_whole = int(impressions.to_integral_value(rounding=ROUND_HALF_EVEN))
        growth = 0
        followers: int | None = None
        for series in self.snapshots.values():
            change = follower_change(list(series.values()), start_ms, end_ms)
            if change is None:
                continue
            growth += change[0]
            followers = (followers or 0) + change[1]
        return EngagementFigures(
            counts=counts,
            total=total,
            impressions=impressions_whole,
            engagement_rate=ratio(Decimal(total), impressions),
            cost_per_engagement=ratio(spend, Decimal(total)),
            follower_growth=growth,
            followers=followers,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "life": {kind: count for kind, count in self.lifetime.items() if count},
            "buckets": {
                str(window_s): {str(start): counts for start, counts in window_buckets.items()}
                for window_s, window_buckets in self.buckets.items()
            },
            "imp": {
                impressions_id: [record.count, record.start_ms, record.end_ms]
                for impressions_id, record in self.impressions.items()
            },
            "fol": {
                series: {snapshot_id: [snapshot.observed_ms, snapshot.followers] for snapshot_id, snapshot in items.items()}
                for series, items in self.snapshots.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EngagementAggregate":
        aggregate = cls()
        for kind, count in data.get("life", {}).items():
            aggregate.lifetime[kind] = int(count)
        aggregate.buckets = {
            int(window_s): {int(start): dict(counts) for start, counts in window_buckets.items()}
            for window_s, window_buckets in data.get("buckets", {}).items()
        }
        aggregate.impressions = {
            impressions_id: ImpressionsRecord(int(count), int(start_ms), int(end_ms))
            for impressions_id, (count, start_ms, end_ms) in data.get("imp", {}).items()
        }
        aggregate.snapshots = {
            series: {snapshot_id: Snapshot(int(observed_ms), int(followers)) for snapshot_id, (observed_ms, followers) in items.items()}
            for series, items in data.get("fol", {}).items()
        }
        return aggregate
