"""A partition's release finishes in a task while the batch goes on, on the real Redis server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest

from bench.services import delete_namespace
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Outgoing, Record, split_by_bytes
from streams.state import Keys, StateStore, connect, partition_for_key

PARTITIONS = 2


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"rt-release-tasks-{uuid.uuid4().hex[:8]}"
    yield Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                   conversion_settle_s=0.0, conversion_idle_release_s=0.0,
                   person_partitions=PARTITIONS, campaign_partitions=2)
    delete_namespace(redis_url, namespace)


def person_on(partition: int) -> str:
    return next(f"p{number}" for number in range(1000)
                if partition_for_key(f"p{number}".encode(), PARTITIONS) == partition)


def journey(settings: Settings, partition: int) -> list[Record]:
    """A click, then a purchase, of one person on ``partition``."""
    person = person_on(partition)
    click = {"type": "click", "event_id": f"c{partition}", "event_time": "2026-11-02T10:00:00Z",
             "user_id": person, "campaign_id": "spring", "channel": "instagram"}
    purchase = {"type": "purchase", "event_id": f"b{partition}", "event_time": "2026-11-02T10:05:00Z",
                "user_id": person, "order_id": f"o{partition}", "amount": "40", "currency": "EUR"}
    return [Record(settings.topic_touchpoints, partition, 0, person.encode(), orjson.dumps(click)),
            Record(settings.topic_conversions, partition, 0, person.encode(), orjson.dumps(purchase))]


class SlowCredits:
    """Sink that collects what a processor sends. A send with credits waits, like a broker's acknowledgement, or fails."""

    def __init__(self, topic: str, steps: list[str], fail: bool = False) -> None:
        self.topic = topic
        self.steps = steps
        self.fail = fail
        self.credits: list[dict[str, Any]] = []

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        credits = [message for message in messages if message.topic == self.topic]
        if not credits:
            return
        self.steps.append("credits sent")
        await asyncio.sleep(0.2)
        if self.fail:
            raise ConnectionError("broker unreachable")
        for message in credits:
            self.credits.extend(message.value if isinstance(message.value, list) else [message.value])
        self.steps.append("credits acknowledged")


def attach_apply_steps(store: StateStore, steps: list[str]) -> None:
    """Record each partition's fenced write in ``steps``."""
    apply = store.apply
    partition_of = {store.keys.offsets(store.keys.person_tag(partition)): partition for partition in range(PARTITIONS)}

    async def recorded(batch: Any) -> None:
        await apply(batch)
        steps.append(f"partition {partition_of[batch.offsets_key]} applied")

    store.apply = recorded  # type: ignore[method-assign]


async def pending_count(store: StateStore, partition: int) -> int:
    return int(await store.client.zcard(store.keys.pending(partition)))


async def with_partitions(processor: AttributionProcessor) -> AttributionProcessor:
    """Load every partition, as the worker does when Kafka assigns them."""
    for partition in range(PARTITIONS):
        await processor.load(partition)
    return processor


async def error_of(processor: AttributionProcessor, records: list[Record]) -> str:
    """Process the records and return the message of the error the batch raised, or "" when it succeeded."""
    try:
        await processor.process(records)
    except (ConnectionError, RuntimeError) as exc:
        return str(exc)
    return ""


def test_next_partition_applied_during_ack(settings: Settings) -> None:
    """Partition 1 is written while partition 0's credits wait for the broker, and the batch ends after both releases."""
    records = journey(settings, 0) + journey(settings, 1)
    steps: list[str] = []
    sink = SlowCredits(settings.topic_credits, steps)

    async def scenario() -> tuple[list[int], int]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = await with_partitions(AttributionProcessor(settings, store, sink))
            attach_apply_steps(store, steps)
            await processor.process(records)
            pending = [await pending_count(store, partition) for partition in range(PARTITIONS)]
            return pending, processor.stats["conversions_attributed"]
        finally:
            await store.close()

    pending, attributed = asyncio.run(scenario())
    assert steps.index("partition 1 applied") < steps.index("credits acknowledged")
    assert steps.count("credits acknowledged") == 2
    assert pending == [0, 0]
    assert attributed == 2
    assert sorted(credit["conversion_id"] for credit in sink.credits) == ["b0", "b1"]


def test_failed_ack_raises_and_keeps_pending(settings: Settings) -> None:
    """A send that fails in the task fails the batch. The conversions stay pending, and the next try releases them."""
    records = journey(settings, 0) + journey(settings, 1)
    steps: list[str] = []
    failing = SlowCredits(settings.topic_credits, steps, fail=True)

    async def scenario() -> tuple[str, list[int], list[int], int]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = await with_partitions(AttributionProcessor(settings, store, failing))
            raised = await error_of(processor, records)
            after_failure = [await pending_count(store, partition) for partition in range(PARTITIONS)]
            loaded = sorted(processor.partitions)
            failing.fail = False
            await processor.process(records)
            return raised, after_failure, loaded, processor.stats["conversions_attributed"]
        finally:
            await store.close()

    raised, after_failure, loaded, attributed = asyncio.run(scenario())
    assert raised == "broker unreachable"
    assert after_failure == [1, 1]
    assert loaded == []  # both releases failed, so both partitions reload from Redis
    assert attributed == 2
    assert sorted(credit["conversion_id"] for credit in failing.credits) == ["b0", "b1"]


def test_failed_release_stops_later_run(settings: Settings) -> None:
    """A later run of a partition whose release task failed is not applied; the retried batch applies it."""
    small_runs = settings.model_copy(update={"batch_max_partition_bytes": 1024})
    person = person_on(0)
    first_run = journey(small_runs, 0)
    later_clicks = [
        Record(small_runs.topic_touchpoints, 0, offset, person.encode(), orjson.dumps({
            "type": "click", "event_id": f"later-{offset}", "event_time": f"2026-11-02T10:{10 + offset:02d}:00Z",
            "user_id": person, "campaign_id": "summer", "channel": "instagram", "landing_url": "https://shop.example/" + "x" * 800,
        }))
        for offset in range(1, 5)
    ]
    records = first_run + later_clicks
    steps: list[str] = []
    failing = SlowCredits(small_runs.topic_credits, steps, fail=True)

    async def scenario() -> tuple[str, int, int, int]:
        store = StateStore(connect(small_runs.redis_url), Keys(small_runs.redis_namespace))
        try:
            processor = AttributionProcessor(small_runs, store, failing)
            await processor.load(0)
            raised = await error_of(processor, records)
            touches_after_failure = int(await store.client.zcard(store.keys.touchpoints(0, person)))
            failing.fail = False
            await processor.process(records)
            touches = int(await store.client.zcard(store.keys.touchpoints(0, person)))
            return raised, touches_after_failure, touches, await pending_count(store, 0)
        finally:
            await store.close()

    assert len(split_by_bytes(records, 1024)) > 1
    raised, touches_after_failure, touches, pending = asyncio.run(scenario())
    assert raised == "broker unreachable"
    assert touches_after_failure == 1  # only the first run's click
    assert touches == 5
    assert pending == 0


def test_batch_error_wins_over_release(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """When the batch fails after a release task failed too, the batch's error is raised and the release's is logged."""
    records = journey(settings, 0) + journey(settings, 1)
    failing = SlowCredits(settings.topic_credits, [], fail=True)

    class FailingIngest(AttributionProcessor):
        async def _ingest(self, partition: int, *args: Any) -> bool:
            if partition == 1:
                raise RuntimeError("ingest failed on partition 1")
            return await super()._ingest(partition, *args)

    async def scenario() -> tuple[str, list[int]]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = await with_partitions(FailingIngest(settings, store, failing))
            return await error_of(processor, records), sorted(processor.partitions)
        finally:
            await store.close()

    with caplog.at_level(logging.ERROR, logger="streams.attribution"):
        raised, loaded = asyncio.run(scenario())
    assert raised == "ingest failed on partition 1"
    assert loaded == []
    logged = [entry.getMessage() for entry in caplog.records if entry.name == "streams.attribution"]
    assert len(logged) == 1
    assert "partition=0" in logged[0]
    assert "broker unreachable" in logged[0]
