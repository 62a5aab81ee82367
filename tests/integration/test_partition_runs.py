"""A partition's share of a batch applied in several Redis writes gives the same state as one write.

``ROITRACK_BATCH_MAX_PARTITION_BYTES`` splits a partition's records into runs so
that one Lua call never carries an unbounded batch. The bench workload is
replayed through both processors on the real Redis twice: with the default
bound, and with the smallest one, which makes most runs a single message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
import redis

from bench.processors import build_records, replay
from bench.services import delete_namespace
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Outgoing, Record, split_by_bytes
from streams.roi_agent import RoiProcessor
from streams.state import Keys, Rewind, StateStore, connect, partition_for_key


def record(offset: int, size: int) -> Record:
    return Record("touchpoints", 0, offset, b"k", b"x" * size)


def test_split_keeps_order_and_bound() -> None:
    records = [record(0, 400), record(1, 400), record(2, 300), record(3, 2000), record(4, 10)]
    runs = split_by_bytes(records, 1024)
    assert [[item.offset for item in run] for run in runs] == [[0, 1], [2], [3], [4]]
    assert split_by_bytes([], 1024) == []
    assert [len(run) for run in split_by_bytes(records, 10_000)] == [5]


def stored_state(redis_url: str, namespace: str) -> dict[str, Any]:
    """The campaign aggregates and the person-side counters of a namespace, by key without the namespace."""
    client = redis.Redis.from_url(redis_url)
    try:
        state: dict[str, Any] = {}
        for key in sorted(client.scan_iter(match=f"{namespace}:*:camp:*")):
            state[key.decode().removeprefix(namespace)] = orjson.loads(client.get(key) or b"null")
        for key in sorted(client.scan_iter(match=f"{namespace}:*:stats")):
            state[key.decode().removeprefix(namespace)] = client.hgetall(key)
        return state
    finally:
        client.close()


def settings_for(redis_url: str, max_bytes: int) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=f"rt-runs-{uuid.uuid4().hex[:8]}",
                    person_partitions=8, campaign_partitions=4, batch_max_partition_bytes=max_bytes)


def replay_with_bound(settings: Settings, records: list[Record]) -> tuple[int, Counter[str], dict[str, Any]]:
    """Replay the records; return the conversions attributed, the Redis writes per side, and the stored state."""
    redis_url, namespace = settings.redis_url, settings.redis_namespace
    writes: Counter[str] = Counter()
    original = StateStore.apply

    async def counting_apply(self: StateStore, batch: Any) -> Any:
        # Person partitions' offsets keys carry the tag {pN}, campaign partitions' {cN}.
        writes["person" if ":{p" in batch.offsets_key else "campaign"] += 1
        return await original(self, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StateStore, "apply", counting_apply)
        try:
            _, _, attributed = asyncio.run(replay(settings, records, 480))
            state = stored_state(redis_url, namespace)
        finally:
            delete_namespace(redis_url, namespace)
    return attributed, writes, state


def test_runs_match_one_write(redis_url: str) -> None:
    # One set of records for both replays: the workload's event times follow the clock.
    records, _ = build_records(settings_for(redis_url, 1024), "batched", 2_000, seed=3)
    whole_attributed, whole_writes, whole = replay_with_bound(settings_for(redis_url, 4 * 1024 * 1024), records)
    split_attributed, split_writes, split = replay_with_bound(settings_for(redis_url, 1024), records)

    assert whole_attributed > 0
    assert split_attributed == whole_attributed
    assert split_writes["person"] > 2 * whole_writes["person"], (split_writes, whole_writes)
    assert split_writes["campaign"] > 2 * whole_writes["campaign"], (split_writes, whole_writes)
    assert any(":camp:" in key for key in whole), "the replay stored no campaign aggregates"
    assert any(key.endswith(":stats") for key in whole), "the replay stored no person counters"
    assert split == whole


async def ignore(messages: Sequence[Outgoing]) -> None:
    """Drop what a processor sends."""


def gap_after_restart(settings: Settings, records: list[Record], make: Callable[[StateStore, Rewind], Any],
                      tag: Callable[[Keys, int], str], topic: str) -> tuple[int, list[dict[str, int]]]:
    """Apply offsets 0 and 1, forget the partition as a restart would, then process 3 to 6 in small runs.

    Return the stored offset of ``topic`` and the rewinds the processor asked for.
    """
    rewinds: list[dict[str, int]] = []

    async def rewind(partition: int, targets: dict[str, int]) -> None:
        rewinds.append(targets)

    async def scenario() -> int:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = make(store, rewind)
            partition = records[0].partition
            await processor.process(records[:2])
            processor.forget([partition])
            await processor.process(records[3:7])
            stored = await store.load_offsets(store.keys.offsets(tag(store.keys, partition)))
            return stored.get(topic, -1)
        finally:
            await store.close()

    try:
        return asyncio.run(scenario()), rewinds
    finally:
        delete_namespace(settings.redis_url, settings.redis_namespace)


def one_partition(records: list[Record], topic: str) -> list[Record]:
    """Return the records of the topic's busiest partition, in offset order."""
    chosen = [record for record in records if record.topic == topic]
    partition = Counter(record.partition for record in chosen).most_common(1)[0][0]
    return sorted((record for record in chosen if record.partition == partition), key=lambda record: record.offset)


def test_attribution_gap_stops_later_runs(redis_url: str) -> None:
    """Runs after an offset gap must wait for the re-read, or the records in the gap are skipped for good."""
    settings = settings_for(redis_url, 1024)
    records, _ = build_records(settings, "batched", 12_000, seed=3)
    chosen = one_partition(records, settings.topic_touchpoints)
    assert len(chosen) >= 7
    assert all(len(record.value or b"") > 1024 for record in chosen)

    stored, rewinds = gap_after_restart(
        settings, chosen, lambda store, rewind: AttributionProcessor(settings, store, ignore, rewind=rewind),
        lambda keys, partition: keys.person_tag(partition), settings.topic_touchpoints,
    )

    assert rewinds
    assert rewinds[0][settings.topic_touchpoints] == 2
    assert stored == 1


def test_roi_gap_stops_later_runs(redis_url: str) -> None:
    settings = settings_for(redis_url, 1024)
    records, _ = build_records(settings, "batched", 12_000, seed=3)
    credits: list[Record] = []
    next_offset: Counter[int] = Counter()

    async def keep_credits(messages: Sequence[Outgoing]) -> None:
        for message in messages:
            if message.topic == settings.topic_credits and message.partition is None:
                partition = partition_for_key(message.key.encode(), settings.campaign_partitions)
                credits.append(Record(message.topic, partition, next_offset[partition], message.key.encode(),
                                      orjson.dumps(message.value)))
                next_offset[partition] += 1

    async def attribute() -> None:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            await AttributionProcessor(settings, store, keep_credits).process(records)
        finally:
            await store.close()

    try:
        asyncio.run(attribute())
    finally:
        delete_namespace(settings.redis_url, settings.redis_namespace)
    chosen = one_partition(credits, settings.topic_credits)
    assert len(chosen) >= 7

    stored, rewinds = gap_after_restart(
        settings, chosen, lambda store, rewind: RoiProcessor(settings, store, ignore, rewind=rewind),
        lambda keys, partition: keys.campaign_tag(partition), settings.topic_credits,
    )

    assert rewinds
    assert rewinds[0][settings.topic_credits] == 2
    assert stored == 1
