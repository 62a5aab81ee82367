"""Read the pipeline's outputs: RoiUpdates as they arrive, credits after a run, and latencies from both.

Times are Kafka record timestamps (CreateTime, set by the worker's producer
when it sends the record), so a RoiUpdate's time is when the worker published it.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from roitrack.connections import kafka_python_config
from roitrack.settings import Settings
from schemas.outputs import DEFAULT_MODEL
from streams.credit_check import is_credit_batch


@dataclass(frozen=True, slots=True)
class LifetimeUpdate:
    """The default model's lifetime conversions of one campaign in one published RoiUpdate."""

    campaign_id: str
    sequence: int
    conversions: Decimal
    published_s: float


class UpdateWatcher:
    """Collector of a run's lifetime RoiUpdates, read in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.updates: list[LifetimeUpdate] = []
        self._latest: dict[str, LifetimeUpdate] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-roi-updates", daemon=True)

    def start(self) -> "UpdateWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = KafkaConsumer(
            self.settings.topic_roi_updates,
            bootstrap_servers=self.settings.require_kafka().split(","),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **kafka_python_config(self.settings),
        )
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        self._add(orjson.loads(record.value), record.timestamp / 1000)
        finally:
            consumer.close()

    def _add(self, value: dict[str, Any], published_s: float) -> None:
        if value.get("window") != "lifetime":
            return
        update = LifetimeUpdate(
            value["campaign_id"], int(value["sequence"]),
            Decimal(value["models"][DEFAULT_MODEL]["conversions"]), published_s,
        )
        with self._lock:
            self.updates.append(update)
            known = self._latest.get(update.campaign_id)
            if known is None or update.sequence > known.sequence:
                self._latest[update.campaign_id] = update

    def conversions(self) -> dict[str, Decimal]:
        """Return the latest lifetime conversions per campaign."""
        with self._lock:
            return {campaign: update.conversions for campaign, update in self._latest.items()}

    def total_conversions(self) -> Decimal:
        return sum(self.conversions().values(), Decimal(0))

    def snapshot(self) -> list[LifetimeUpdate]:
        with self._lock:
            return list(self.updates)


def completion_time(updates: list[LifetimeUpdate], target: Decimal) -> float | None:
    """Return the publication time of the update after which the campaigns' conversions sum to ``target``."""
    latest: dict[str, LifetimeUpdate] = {}
    for update in sorted(updates, key=lambda update: (update.published_s, update.sequence)):
        known = latest.get(update.campaign_id)
        if known is None or update.sequence > known.sequence:
            latest[update.campaign_id] = update
        if sum((item.conversions for item in latest.values()), Decimal(0)) >= target:
            return update.published_s
    return None


def read_topic(settings: Settings, topic: str, partitions: int) -> list[Any]:
    """Read every record of a topic up to its current end offsets."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.require_kafka().split(","),
        group_id=None,
        enable_auto_commit=False,
        **kafka_python_config(settings),
    )
    try:
        assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        records: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def credit_positions(credit_records: list[Any]) -> dict[str, tuple[str, Decimal]]:
    """Map each conversion id to its default-model campaign and that campaign's running count after it.

    The ROI agent applies a partition's credits in offset order, so the credit
    is included in the first update of its campaign whose lifetime
    conversions reach that running count.
    """
    running: dict[str, Decimal] = defaultdict(Decimal)
    positions: dict[str, tuple[str, Decimal]] = {}
    for record in sorted(credit_records, key=lambda record: (record.partition, record.offset)):
        value = orjson.loads(record.value)
        # The worker packs credits into arrays; a single credit object is read as well.
        for credit in value if is_credit_batch(value) else [value]:
            if not isinstance(credit, dict) or "weights" not in credit:
                continue  # a fact array or a progress report, which carry no credit
            weight = credit["weights"].get(DEFAULT_MODEL)
            if weight is None or Decimal(weight) == 0:
                continue
            campaign_id = credit["campaign_id"]
            running[campaign_id] += Decimal(weight)
            positions[credit["conversion_id"]] = (campaign_id, running[campaign_id])
    return positions


def update_times(
    positions: dict[str, tuple[str, Decimal]], updates: list[LifetimeUpdate]
) -> dict[str, float]:
    """Return, per conversion id, when the first RoiUpdate that includes it was published."""
    by_campaign: dict[str, list[LifetimeUpdate]] = defaultdict(list)
    for update in updates:
        by_campaign[update.campaign_id].append(update)
    counts: dict[str, list[Decimal]] = {}
    for campaign_id, campaign_updates in by_campaign.items():
        campaign_updates.sort(key=lambda update: update.sequence)
        counts[campaign_id] = [update.conversions for update in campaign_updates]
    found: dict[str, float] = {}
    for conversion_id, (campaign_id, position) in positions.items():
        campaign_counts = counts.get(campaign_id)
        if not campaign_counts:
            continue
        index = bisect.bisect_left(campaign_counts, position)
        if index < len(campaign_counts):
            found[conversion_id] = by_campaign[campaign_id][index].published_s
    return found


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` 0.99 for p99)."""
    if not values:
        raise ValueError("no values to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
