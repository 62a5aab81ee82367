"""A partition's share of a batch applied in several Redis writes gives the same state as one write.

``ROITRACK_BATCH_MAX_PARTITION_BYTES`` splits a partition's records into runs so
that one Lua call never carries an unbounded batch. The bench workload is
replayed through both processors on the real Redis twice: with the default
bound, and with the smallest one, which makes most runs a single message.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
import redis

from bench.processors import build_records, replay
from bench.services import delete_namespace
from roitrack.settings import Settings
from streams.records import Record, split_by_bytes
from streams.state import StateStore


def record(offset: int, size: int) -> Record:
    return Record("touchpoints", 0, offset, b"k", b"x" * size)


def test_split_keeps_order_and_bound() -> None:
    records = [record(0, 400), record(1, 400), record(2, 300), record(3, 2000), record(4, 10)]
    runs = split_by_bytes(records, 1024)
    assert [[item.offset for item in run] for run in runs] == [[0, 1], [2], [3], [4]]
    assert split_by_bytes([], 1024) == []
    assert [len(run) for run in split_by_bytes(records, 10_000)] == [5]


def campaign_state(redis_url: str, namespace: str) -> dict[str, Any]:
    """The stored campaign aggregates of a namespace, by key without the namespace."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(client.scan_iter(match=f"{namespace}:*:camp:*"))
        return {key.decode().removeprefix(namespace): orjson.loads(client.get(key) or b"null") for key in keys}
    finally:
        client.close()


def settings_for(redis_url: str, max_bytes: int) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=f"rt-runs-{uuid.uuid4().hex[:8]}",
                    person_partitions=8, campaign_partitions=4, batch_max_partition_bytes=max_bytes)


def replay_with_bound(settings: Settings, records: list[Record]) -> tuple[int, int, dict[str, Any]]:
    """Replay the records; return the conversions attributed, the Redis writes, and the campaigns."""
    redis_url, namespace = settings.redis_url, settings.redis_namespace
    writes = [0]
    original = StateStore.apply

    async def counting_apply(self: StateStore, batch: Any) -> Any:
        writes[0] += 1
        return await original(self, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StateStore, "apply", counting_apply)
        try:
            _, attributed = asyncio.run(replay(settings, records, 480))
            campaigns = campaign_state(redis_url, namespace)
        finally:
            delete_namespace(redis_url, namespace)
    return attributed, writes[0], campaigns


def test_runs_match_one_write(redis_url: str) -> None:
    # One set of records for both replays: the workload's event times follow the clock.
    records, _ = build_records(settings_for(redis_url, 1024), "batched", 2_000, seed=3)
    whole_attributed, whole_writes, whole = replay_with_bound(settings_for(redis_url, 4 * 1024 * 1024), records)
    split_attributed, split_writes, split = replay_with_bound(settings_for(redis_url, 1024), records)

    assert whole_attributed > 0
    assert split_attributed == whole_attributed
    assert split_writes > 2 * whole_writes, (split_writes, whole_writes)
    assert whole, "the replay stored no campaign aggregates"
    assert split == whole
