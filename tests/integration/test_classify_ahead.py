"""The attribution agent classifies the next partition's run while it waits for Redis, on the real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bench.services import delete_namespace
from roitrack.settings import Settings
from streams.attribution import CLASSIFY_SLICE_BYTES, AttributionProcessor
from streams.records import Record
from streams.state import Keys, StateStore, connect, partition_for_key
from tests.integration.test_state_fencing import Sink

PARTITIONS = 4
PEOPLE = [f"person-{number}" for number in range(24)]


@pytest.fixture
def namespaces(redis_url: str) -> Iterator[list[str]]:
    names = [f"rt-ahead-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield names
    for name in names:
        delete_namespace(redis_url, name)


def settings_for(redis_url: str, namespace: str) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                    conversion_settle_s=0.0, conversion_idle_release_s=0.0,
                    person_partitions=PARTITIONS, campaign_partitions=2)


def batches(settings: Settings) -> list[list[Record]]:
    """A warm-up batch that loads every partition, then one batch of clicks and purchases on all of them."""
    offsets: dict[tuple[str, int], int] = {}

    def record(topic: str, event: dict[str, Any]) -> Record:
        key = event["user_id"].encode()
        partition = partition_for_key(key, PARTITIONS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        return Record(topic, partition, offset, key, orjson.dumps(event))

    def click(person: str, minute: int) -> Record:
        return record(settings.topic_touchpoints, {
            "type": "click", "event_id": f"c-{person}-{minute}", "event_time": f"2026-11-02T10:{minute:02d}:00Z",
            "user_id": person, "campaign_id": f"camp-{minute % 3}", "channel": "instagram"})

    warm_up = [click(person, 0) for person in PEOPLE]
    measured = [click(person, minute) for minute in (1, 2) for person in PEOPLE]
    measured += [record(settings.topic_conversions, {
        "type": "purchase", "event_id": f"p-{person}", "event_time": "2026-11-02T10:03:00Z", "user_id": person,
        "order_id": f"o-{person}", "amount": "30", "currency": "EUR"}) for person in PEOPLE[::2]]
    assert len({record.partition for record in warm_up}) == PARTITIONS
    return [warm_up, measured]


def credit_totals(sink: Sink, settings: Settings) -> dict[str, str]:
    items = [item for value in sink.on(settings.topic_credits) for item in (value if isinstance(value, list) else [value])]
    return {item["credit_id"]: item["revenue"]["linear"] for item in items if item.get("type") == "credit"}


class Counting(AttributionProcessor):
    """Records which partitions were classified and probed ahead, in a task of their own, and which in their run."""

    ahead_partitions: list[int]
    inline_partitions: list[int]
    probed_ahead: list[int]
    probed_inline: list[int]

    def _classifying(self, plan: Any, partition: int, *args: Any) -> Any:
        if asyncio.current_task() is not getattr(self, "main_task", None):
            self.ahead_partitions.append(partition)
        else:
            self.inline_partitions.append(partition)
        return super()._classifying(plan, partition, *args)

    async def _run_probe(self, partition: int, plan: Any) -> Any:
        if asyncio.current_task() is not getattr(self, "main_task", None):
            self.probed_ahead.append(partition)
        else:
            self.probed_inline.append(partition)
        return await super()._run_probe(partition, plan)


async def run_processor(settings: Settings, runs: list[list[Record]], one_call_per_partition: bool,
                        drop_before: int | None = None) -> tuple[Sink, Counting, dict[str, Any]]:
    sink = Sink()
    store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
    processor = Counting(settings, store, sink)
    processor.ahead_partitions = []
    processor.inline_partitions = []
    processor.probed_ahead = []
    processor.probed_inline = []
    processor.main_task = asyncio.current_task()  # type: ignore[attr-defined]
    try:
        await processor.process(runs[0])
        for calls in (processor.ahead_partitions, processor.inline_partitions,
                      processor.probed_ahead, processor.probed_inline):
            calls.clear()
        if drop_before is not None:
            apply = store.apply

            previous_offsets_key = store.keys.offsets(store.keys.person_tag(drop_before - 1))

            async def apply_then_forget(batch: Any) -> None:
                # As if a rebalance dropped the next partition while the write of the
                # run before it, which classified it ahead, was in flight.
                if batch.offsets_key == previous_offsets_key:
                    processor.forget([drop_before])
                await apply(batch)

            store.apply = apply_then_forget  # type: ignore[method-assign]
        if one_call_per_partition:
            for partition in range(PARTITIONS):
                await processor.process([record for record in runs[1] if record.partition == partition])
        else:
            await processor.process(runs[1])
        stored = {
            str(partition): await store.client.zcard(store.keys.touchpoints(partition, person))
            for person in PEOPLE for partition in [partition_for_key(person.encode(), PARTITIONS)]
        }
        return sink, processor, stored
    finally:
        await store.close()


def test_classify_ahead_same_result(redis_url: str, namespaces: list[str]) -> None:
    together_settings = settings_for(redis_url, namespaces[0])
    apart_settings = settings_for(redis_url, namespaces[1])

    together, processor, together_stored = asyncio.run(
        run_processor(together_settings, batches(together_settings), False))
    apart, apart_processor, apart_stored = asyncio.run(run_processor(apart_settings, batches(apart_settings), True))

    # Every partition after the first was classified and probed during the one before it, and not again.
    assert processor.ahead_partitions == [1, 2, 3]
    assert processor.inline_partitions == [0]
    assert processor.probed_ahead == [1, 2, 3]
    assert processor.probed_inline == [0]
    assert apart_processor.ahead_partitions == []
    assert apart_processor.probed_inline == [0, 1, 2, 3]
    assert credit_totals(together, together_settings) == credit_totals(apart, apart_settings)
    assert len(credit_totals(together, together_settings)) == len(PEOPLE[::2]) * 3  # one credit per campaign touched
    assert together_stored == apart_stored


def test_dropped_partition_classified_again(redis_url: str, namespaces: list[str]) -> None:
    """A partition whose cached state was dropped after it was classified ahead is loaded and classified again."""
    dropped_settings = settings_for(redis_url, namespaces[0])
    apart_settings = settings_for(redis_url, namespaces[1])

    dropped, processor, dropped_stored = asyncio.run(
        run_processor(dropped_settings, batches(dropped_settings), False, drop_before=2))
    apart, _, apart_stored = asyncio.run(run_processor(apart_settings, batches(apart_settings), True))

    assert processor.ahead_partitions == [1, 2, 3]
    assert processor.inline_partitions == [0, 2]  # partition 2 was loaded again and classified again
    assert processor.probed_inline == [0, 2]  # and probed again

    assert credit_totals(dropped, dropped_settings) == credit_totals(apart, apart_settings)
    assert dropped_stored == apart_stored


class Ordering(AttributionProcessor):
    """Records when a partition run's fenced write returned and when a partition finished classifying."""

    steps: list[tuple[str, int]]

    def _classifying(self, plan: Any, partition: int, *args: Any) -> Any:
        yield from super()._classifying(plan, partition, *args)
        self.steps.append(("classified", partition))


def test_write_returns_during_classify_ahead(redis_url: str, namespaces: list[str]) -> None:
    """A long run classified ahead pauses, so the write of the run before it is sent and its reply read meanwhile.

    Without the pauses, a large write waited in the socket buffer until the
    whole next run was classified, and Redis started it only then.
    """
    settings = settings_for(redis_url, namespaces[0])
    people = {partition: [person for person in PEOPLE if partition_for_key(person.encode(), PARTITIONS) == partition]
              for partition in (0, 1)}

    def message(partition: int, offset: int, events: int) -> Record:
        body = [{"type": "click", "event_id": f"c-{partition}-{offset}-{number}",
                 "event_time": f"2026-11-02T10:{number % 60:02d}:00Z",
                 "user_id": people[partition][number % len(people[partition])],
                 "campaign_id": f"camp-{number % 3}", "channel": "instagram"} for number in range(events)]
        return Record(settings.topic_touchpoints, partition, offset, b"", orjson.dumps(body))

    long_run = [message(1, offset, 50) for offset in range(1, 201)]
    assert sum(len(record.value or b"") for record in long_run) > 4 * CLASSIFY_SLICE_BYTES

    async def scenario() -> list[tuple[str, int]]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        processor = Ordering(settings, store, Sink())
        processor.steps = []
        apply = store.apply
        partition_of = {store.keys.offsets(store.keys.person_tag(partition)): partition for partition in (0, 1)}

        async def recorded_apply(batch: Any) -> None:
            await apply(batch)
            processor.steps.append(("applied", partition_of[batch.offsets_key]))

        try:
            await processor.process([message(0, 0, 1), message(1, 0, 1)])  # loads both partitions
            processor.steps.clear()
            store.apply = recorded_apply  # type: ignore[method-assign]
            await processor.process([message(0, 1, 50), *long_run])
            return processor.steps
        finally:
            await store.close()

    steps = asyncio.run(scenario())
    assert steps.index(("applied", 0)) < steps.index(("classified", 1)), steps
    assert steps[-1] == ("applied", 1)
