"""Produce a file of events into Kafka with kafka-python.

A file is JSON lines (one event object per line) or a journey CSV in the
ChannelAttribution format (``.csv`` or ``.csv.gz``). Each event goes to its
topic by ``type``, keyed by person or campaign. Lines that cannot be routed
(not JSON, not an object, unknown type) are produced to the touchpoints topic
unchanged, so the worker rejects them into the dead-letter topic with the
reason, like any other bad input.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError

from roitrack.connections import kafka_python_config
from roitrack.settings import Settings
from roitrack.topics import input_topic
from schemas.events import CAMPAIGN_TYPES, CONVERSION_TYPES
from streams.state import partition_for_key

log = logging.getLogger(__name__)

DEFAULT_JOURNEY_START = datetime(2026, 11, 2, tzinfo=timezone.utc)
#: Key of a line that cannot be routed. Such a line goes to the touchpoints topic.
UNROUTABLE_KEY = b"unroutable"


@dataclass
class ReplayStats:
    """Counts of what a replay produced."""

    events: int = 0
    messages: int = 0
    conversions: int = 0
    unroutable: int = 0
    too_large: int = 0
    by_topic: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Routed:
    topic: str
    key: bytes
    value: bytes
    is_conversion: bool
    routable: bool


def route(settings: Settings, raw: bytes, event: Any) -> Routed:
    """Pick the topic and key of one event; see the module docstring for unroutable input."""
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        event_type = event["type"]
        topic = input_topic(settings, event_type)
        # Campaign events are keyed by campaign, the others by person.
        key = event.get("campaign_id") if event_type in CAMPAIGN_TYPES else event.get("user_id") or event.get("anonymous_id")
        if topic is not None and isinstance(key, str):
            return Routed(topic, key.encode(), raw, event_type in CONVERSION_TYPES, True)
    return Routed(settings.topic_touchpoints, UNROUTABLE_KEY, raw, False, False)


def read_events(path: Path, start: datetime = DEFAULT_JOURNEY_START) -> Iterator[tuple[bytes, Any]]:
    """Yield (raw JSON, parsed object or None) for every event in a file."""
    name = path.name.lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        from roitrack.journeys import journey_events, read_journeys

        for event in journey_events(read_journeys(path), start=start):
            yield orjson.dumps(event), event
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if number == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some editors write
            line = line.strip()
            if not line:
                continue
            try:
                yield line, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield line, None


def campaign_events(path: Path) -> Iterator[tuple[bytes, Any]]:
    from roitrack.journeys import load_campaigns

    campaigns, spends = load_campaigns(path)
    for event in [*campaigns, *spends]:
        yield orjson.dumps(event), event


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.require_kafka().split(","),
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        retries=10,
        # Idempotence needs broker support that not every Kafka-protocol broker has;
        # duplicates from producer retries are dropped downstream by id.
        enable_idempotence=False,
        # One request in flight per broker keeps each partition in send order
        # when a request is retried; attribution's settle rule relies on that order.
        max_in_flight_requests_per_connection=1,
        **kafka_python_config(settings),
    )


class Replayer:
    """Produces events with optional packing into batch messages and a rate limit."""

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer,
        batch_size: int = 1,
        rate_per_s: float = 0.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.settings = settings
        self.producer = producer
        self.batch_size = batch_size
        self.rate_per_s = rate_per_s
        self.on_progress = on_progress
        self.stats = ReplayStats()
        self._buffers: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        self._buffered_bytes: dict[tuple[str, int], int] = defaultdict(int)
        self._partitions = {
            settings.topic_touchpoints: settings.person_partitions,
            settings.topic_conversions: settings.person_partitions,
            settings.topic_campaigns: settings.campaign_partitions,
            settings.topic_spend: settings.campaign_partitions,
        }

    #: Events larger than this are sent on their own rather than packed.
    max_packed_bytes = 64 * 1024

    #: A packed message is sent before it would grow past this, so it stays under
    #: Apache Kafka's default ``message.max.bytes`` (1,048,588 bytes).
    max_message_bytes = 900 * 1024

    #: Packed messages are sent at least this often, so a slow replay does not
    #: hold touchpoints back while conversions of the same person go out.
    max_buffer_age_s = 0.1

    def replay(self, events: Iterable[tuple[bytes, Any]]) -> ReplayStats:
        started = time.monotonic()
        last_flush = started
        for raw, event in events:
            routed = route(self.settings, raw, event)
            self._produce(routed, event)
            self.stats.events += 1
            self.stats.by_topic[routed.topic] += 1
            if routed.is_conversion:
                self.stats.conversions += 1
            if not routed.routable:
                self.stats.unroutable += 1
            if self.on_progress is not None:
                self.on_progress(1)
            if self.rate_per_s > 0:
                ahead_s = self.stats.events / self.rate_per_s - (time.monotonic() - started)
                if ahead_s > 0:
                    time.sleep(ahead_s)
            if self.batch_size > 1 and (self.rate_per_s > 0 or self.stats.events % 256 == 0):
                now = time.monotonic()
                if now - last_flush >= self.max_buffer_age_s:
                    self._flush_all()
                    last_flush = now
        self.flush()
        self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        try:
            self.producer.send(topic, key=key, value=value, partition=partition)
        except MessageSizeTooLargeError:
            self.stats.too_large += 1
            log.warning(
                "skipped a %d-byte message for %s: it is over the producer's maximum request size",
                len(value), topic,
            )
            return
        self.stats.messages += 1

    def _produce(self, routed: Routed, event: Any) -> None:
        if self.batch_size == 1 or not routed.routable:
            self._send(routed.topic, routed.key, routed.value)
            return
        partition = partition_for_key(routed.key, self._partitions[routed.topic])
        buffer = self._buffers[(routed.topic, partition)]
        deal_purchase = routed.is_conversion and event.get("deal_id") is not None
        if deal_purchase:
            # A deal purchase goes out at once. Held in a buffer that fills slowly while
            # touchpoints hours later go out, it could arrive after the person partitions'
            # progress (streams.progress) passed the deal's deadline, and the deal would
            # expire. The partition's touchpoints go first, so they keep their order before it.
            touchpoints = self._buffers.get((self.settings.topic_touchpoints, partition))
            if touchpoints:
                self._flush_buffer(self.settings.topic_touchpoints, partition, touchpoints)
        if len(routed.value) > self.max_packed_bytes:
            # Sent on its own, after the events buffered before it, so the partition keeps their order.
            self._flush_buffer(routed.topic, partition, buffer)
            self._send(routed.topic, routed.key, routed.value)
            return
        # The packed message is a JSON array: the values, a comma or bracket each, and one more bracket.
        if buffer and self._buffered_bytes[(routed.topic, partition)] + len(routed.value) + 2 > self.max_message_bytes:
            self._flush_buffer(routed.topic, partition, buffer)
        buffer.append((routed.key, routed.value))
        self._buffered_bytes[(routed.topic, partition)] += len(routed.value) + 1
        if deal_purchase:
            self._flush_buffer(routed.topic, partition, buffer)
        elif len(buffer) >= self.batch_size:
            self._flush_buffer(routed.topic, partition, buffer)

    def _flush_buffer(self, topic: str, partition: int, buffer: list[tuple[bytes, bytes]]) -> None:
        if not buffer:
            return
        # Every event in the buffer hashes to this partition, so the first key stands for all.
        value = b"[" + b",".join(value for _, value in buffer) + b"]"
        self._send(topic, buffer[0][0], value, partition)
        buffer.clear()
        self._buffered_bytes[(topic, partition)] = 0

    def _flush_all(self) -> None:
        for (topic, partition), buffer in self._buffers.items():
            self._flush_buffer(topic, partition, buffer)

    def flush(self) -> None:
        self._flush_all()
        self.producer.flush()
