"""Prometheus metrics of one worker process, served at ``/metrics``.

Each ``WorkerMetrics`` has its own registry, so several pipelines in one
process (tests) do not collide. The agents add to the counters once per batch
and partition, after the batch's Redis write succeeded, so a retried batch is
counted once. Labels are topics, partitions, reasons and operation names:
never ids of people, orders or campaigns.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.context_managers import Timer

#: Attribution latency is mostly the settle delay plus the release timer's tick.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Redis calls are one pipeline or one script per batch: from below a millisecond to seconds.
REDIS_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """The worker's counters, gauges and histograms, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        registry = self.registry
        self.messages_in = Counter(
            "roitrack_messages_in", "Kafka messages applied to the state, per input topic.",
            ["topic"], registry=registry,
        )
        self.events_in = Counter(
            "roitrack_events_in",
            "Events in the applied messages, valid or not, per input topic. A batch message counts each "
            "of its events; a message that is not JSON counts as one.",
            ["topic"], registry=registry,
        )

        self.events_out = Counter(
            "roitrack_events_out", "Messages produced and acknowledged by the broker, per output topic.",
            ["topic"], registry=registry,
        )
        self.progress_messages = Counter(
            "roitrack_progress_messages",
            "Event-time progress reports of person partitions to campaign partitions, sent (out) or "
            "applied (in); they are not counted as messages or events of the credits topic.",
            ["direction"], registry=registry,
        )
        self.dead_letters = Counter(
            "roitrack_dead_letters", "Dead letters produced and acknowledged, per reason and source topic.",
            ["reason", "source_topic"], registry=registry,
        )
        self.duplicates = Counter(
            "roitrack_duplicates",
            "Repeated touchpoints, conversions and credits that were dropped, per input topic.",
            ["topic"], registry=registry,
        )
        self.attribution_events = Counter(
            "roitrack_attribution_events",
            "What the attribution agent did with events, with the names of the Redis stats hash: "
            "touchpoints, conversions_received, conversions_attributed, conversions_unattributed, "
            "identity_links, consent_dropped, touchpoints_bot, touchpoints_ignored, clicks_flood, "
            "duplicates, dead_letters.",
            ["outcome"], registry=registry,
        )

        self.consumer_lag = Gauge(
            "roitrack_consumer_lag",
            "Messages on the broker after the last offset this worker applied, per assigned partition. "
            "Updated on each scrape.",
            ["topic", "partition"], registry=registry,
        )
        self.pending_conversions = Gauge(
            "roitrack_pending_conversions",
            "Conversions waiting for their settle delay on the partitions this worker owns.",
            registry=registry,
        )

        self.attribution_latency = Histogram(
            "roitrack_attribution_latency_seconds",
            "Wall time from this worker receiving (or loading) a conversion until the broker acknowledged "
            "its attribution.",
            buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.redis_seconds = Histogram(
            "roitrack_redis_seconds", "Duration of Redis calls, per operation.",
            ["operation"], buckets=REDIS_BUCKETS_S, registry=registry,
        )
        self.batch_seconds = Histogram(
            "roitrack_batch_seconds", "Duration of one successful batch, per agent.",
            ["agent"], buckets=BATCH_BUCKETS_S, registry=registry,
        )
        self.batch_failures = Counter(
            "roitrack_batch_failures",
            "Failed batch attempts, which are retried, per agent and kind (outage or unexpected).",
            ["agent", "kind"], registry=registry,
        )

    def redis(self, operation: str) -> Timer:
        """Time a Redis call: ``with metrics.redis("dedup_read"): await pipe.execute()``."""
        return self.redis_seconds.labels(operation).time()
