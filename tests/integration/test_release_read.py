"""The release's touchpoint read on the real Redis: one script call against the two pipelines it replaced."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pytest
import redis

from bench.services import delete_namespace
from roitrack.attribution import StoredTouch
from roitrack.settings import Settings
from streams import release
from streams.attribution import AttributionProcessor
from streams.crediting import PendingConversion, decode_touch, encode_touch
from streams.records import Outgoing
from streams.state import Keys, StateStore, connect, partition_for_key

PARTITIONS = 4
LOOKBACK_MS = 30 * 86_400_000


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"rt-release-{uuid.uuid4().hex[:8]}"
    yield Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                   person_partitions=PARTITIONS, campaign_partitions=2,
                   lookback_click_s=LOOKBACK_MS // 1000, lookback_view_s=86_400)
    delete_namespace(redis_url, namespace)


async def ignore(messages: Sequence[Outgoing]) -> None:
    """Drop what the processor sends; this test reads what it returns."""


def pending(person_id: str, time_ms: int, anonymous_id: str | None = None) -> PendingConversion:
    return PendingConversion(
        member=f"{person_id}:{time_ms}".encode(), conversion_id=f"c-{person_id}-{time_ms}", conversion_type="purchase",
        person_id=person_id, anonymous_id=anonymous_id, order_id=None, amount=Decimal("10"), currency="EUR",
        coupon_code=None, time_ms=time_ms, arrived_s=0.0,
    )


async def pipelines_read(client: "redis.asyncio.Redis", keys: Keys, partition: int,
                         due: list[PendingConversion]) -> list[list[StoredTouch]]:
    """Read the touchpoints as the two pipelines before the script did: aliases, then every key."""
    alias_pipe = client.pipeline(transaction=False)
    for item in due:
        alias_pipe.smembers(keys.aliases(partition, item.person_id))
    key_lists = []
    for item, members in zip(due, await alias_pipe.execute()):
        anonymous_ids = {member.decode() for member in members}
        if item.anonymous_id is not None:
            anonymous_ids.add(item.anonymous_id)
        anonymous_ids.discard(item.person_id)
        key_lists.append([keys.touchpoints(partition, item.person_id)] + [
            keys.touchpoints(partition_for_key(anonymous.encode(), PARTITIONS), anonymous)
            for anonymous in sorted(anonymous_ids)
        ])
    pipe = client.pipeline(transaction=False)
    for item, key_list in zip(due, key_lists):
        for key in key_list:
            pipe.zrangebyscore(key, item.time_ms - LOOKBACK_MS, item.time_ms, withscores=True)
    results = iter(await pipe.execute())
    touches = []
    for key_list in key_lists:
        found: dict[str, StoredTouch] = {}
        for _ in key_list:
            for member, score in next(results):
                touch = decode_touch(member, score)
                found.setdefault(touch.event_id, touch)
        touches.append(list(found.values()))
    return touches


def people_on(partition: int, prefix: str, count: int) -> list[str]:
    people = (f"{prefix}-{number}" for number in range(10_000))
    return [person for person in people if partition_for_key(person.encode(), PARTITIONS) == partition][:count]


@pytest.mark.parametrize(("seed", "chunk", "budget_people"), [(1, 7, 1000), (2, 1000, 3), (3, 7, 1000)])
def test_script_read_matches_pipelines(
    settings: Settings, seed: int, chunk: int, budget_people: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Aliases on this and other partitions, the conversion's own anonymous id, shared event ids and window edges.

    Several script calls per release: chunks of ``chunk`` conversions, or fewer when
    the touchpoint budget allows only ``budget_people`` people per call.
    """
    chooser = random.Random(seed)
    monkeypatch.setattr(release, "READ_TOUCHES_CHUNK", chunk)
    monkeypatch.setattr(release, "READ_TOUCHES_BUDGET", budget_people * settings.max_touchpoints_per_person)
    keys = Keys(settings.redis_namespace)
    partition = 1
    people = people_on(partition, "user", 25)
    anonymous = [f"anon-{number}" for number in range(30)]
    now_ms = 1_800_000_000_000
    sync = redis.Redis.from_url(settings.redis_url)
    for person in people + anonymous:
        key = keys.touchpoints(partition_for_key(person.encode(), PARTITIONS), person)
        for _ in range(chooser.randint(0, 6)):
            # Event ids repeat across keys, so the first key's copy must win in both reads.
            event_id = f"e{chooser.randint(0, 40)}"
            time_ms = now_ms - chooser.choice([0, 1, LOOKBACK_MS, LOOKBACK_MS + 1, chooser.randint(0, 2 * LOOKBACK_MS)])
            sync.zadd(key, {encode_touch(event_id, f"camp-{chooser.randint(0, 3)}", "click"): time_ms})
    for person in people:
        aliases = chooser.sample(anonymous, chooser.randint(0, 3))
        if aliases:
            sync.sadd(keys.aliases(partition, person), *aliases)
    sync.close()
    due = [pending(person, now_ms - chooser.randint(0, 2), chooser.choice([None, chooser.choice(anonymous), person]))
           for person in people]

    calls = [0]

    async def both() -> tuple[list[list[StoredTouch]], list[list[StoredTouch]]]:
        client = connect(settings.redis_url)
        store = StateStore(client, keys)
        processor = AttributionProcessor(settings, store, ignore)
        script = processor.releaser._read_touches

        async def counted(**kwargs: object) -> object:
            calls[0] += 1
            return await script(**kwargs)

        monkeypatch.setattr(processor.releaser, "_read_touches", counted)
        try:
            return await processor.releaser.touches_for(partition, due), await pipelines_read(client, keys, partition, due)
        finally:
            await store.close()

    script, pipelines = asyncio.run(both())
    assert sum(map(len, pipelines)) > 20, "the random state gave too few touchpoints to compare"
    assert any(item.anonymous_id not in (None, item.person_id) for item in due)
    assert calls[0] == -(-len(due) // min(chunk, budget_people))
    assert script == pipelines
