"""bench.processors: the in-process replay attributes every purchase of a small workload."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from bench.processors import BATCH_RECORDS, build_records, replay
from bench.services import delete_namespace
from roitrack.settings import Settings


@pytest.mark.parametrize("mode", sorted(BATCH_RECORDS))
def test_replay_attributes_every_purchase(redis_url: str, mode: str) -> None:
    namespace = f"bench-processors-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                        person_partitions=8, campaign_partitions=4)
    records, events = build_records(settings, mode, 2_000, seed=3)
    purchases = 0
    for record in records:
        if record.topic == settings.topic_conversions:
            value = orjson.loads(record.value or b"")
            purchases += len(value) if isinstance(value, list) else 1
    try:
        cpu_s, clock_s, attributed = asyncio.run(replay(settings, records, BATCH_RECORDS[mode]))
    finally:
        delete_namespace(redis_url, namespace)

    assert events >= 2_000
    assert purchases > 0
    assert cpu_s > 0
    assert clock_s > 0
    assert attributed == purchases
