"""Which share registers a referral code that one batch shares twice, on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence

import orjson
import pytest
import redis

from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Outgoing, Record
from streams.referrals import decode_owner
from streams.state import Keys, StateStore, connect, partition_for_key

PARTITIONS = 2


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"rt-codes-{uuid.uuid4().hex[:8]}"
    yield Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                   person_partitions=PARTITIONS, campaign_partitions=2)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*"))
    if keys:
        client.unlink(*keys)
    client.close()


async def ignore(messages: Sequence[Outgoing]) -> None:
    """Drop what the processor sends; this test reads Redis."""


def people_on_partition_zero(count: int) -> list[str]:
    people = [f"person-{number}" for number in range(100)]
    return [person for person in people if partition_for_key(person.encode(), PARTITIONS) == 0][:count]


def touch(settings: Settings, offset: int, person: str, campaign: str, kind: str, code: str | None = None) -> Record:
    event = {"type": "touch", "event_id": f"t{offset}", "event_time": "2026-11-02T09:00:00Z", "user_id": person,
             "campaign_id": campaign, "channel": "instagram", "kind": kind}
    if code is not None:
        event["referral_code"] = code
    return Record(settings.topic_touchpoints, 0, offset, person.encode(), orjson.dumps(event))


@pytest.mark.parametrize("engagement_kinds", ["like,share,comment,follow", "like"])
def test_first_share_in_batch_registers(settings: Settings, engagement_kinds: str) -> None:
    """The first share in the batch wins, also when the other sharer has an earlier touch, and when shares are not touchpoints."""
    settings = settings.model_copy(update={"engagement_touch_kinds": frozenset(engagement_kinds.split(","))})
    late_sharer, first_sharer = people_on_partition_zero(2)
    records = [
        touch(settings, 0, late_sharer, "camp-late", "like"),
        touch(settings, 1, first_sharer, "camp-first", "share", "CODE"),
        touch(settings, 2, late_sharer, "camp-late", "share", "CODE"),
    ]

    async def scenario() -> bytes | None:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        await AttributionProcessor(settings, store, ignore).process(records)
        owner: bytes | None = await client.hget(store.keys.referral_codes(), "CODE")
        await store.close()
        return owner

    owner = asyncio.run(scenario())
    assert owner is not None
    assert decode_owner(owner).advocate_id == first_sharer
    assert decode_owner(owner).campaign_id == "camp-first"
