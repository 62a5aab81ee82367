"""The fenced batch write and the processors' replay safety, on a real Redis."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis

from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Outgoing, Record
from streams.roi_agent import RoiProcessor
from streams.state import FencedBatch, Keys, StaleBatch, StateRolledBack, StateStore, connect, partition_for_key


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"rt-fence-{uuid.uuid4().hex[:8]}"
    yield Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                   conversion_settle_s=0.0, conversion_idle_release_s=0.0, person_partitions=2, campaign_partitions=2)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*"))
    if keys:
        client.unlink(*keys)
    client.close()


class Sink:
    """Collects what a processor sends."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        self.messages.extend(messages)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [message.value for message in self.messages if message.topic == topic]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_fenced_apply_refuses_replayed_offsets(settings: Settings) -> None:
    async def scenario() -> tuple[bool, dict[bytes, bytes], bytes | None]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        offsets_key = store.keys.offsets(store.keys.person_tag(0))
        data_key = f"{store.keys.person_tag(0)}:data"

        first = FencedBatch(offsets_key)
        first.cover("touchpoints", 0, 4, -1)
        first.command("SET", data_key, "first")
        await store.apply(first)

        replayed = FencedBatch(offsets_key)
        replayed.cover("touchpoints", 3, 6, -1)
        replayed.command("SET", data_key, "replayed")
        refused = False
        try:
            await store.apply(replayed)
        except StaleBatch:
            refused = True
        offsets = await client.hgetall(offsets_key)
        value = await client.get(data_key)
        await store.close()
        return refused, offsets, value

    refused, offsets, value = run(scenario())
    assert refused
    assert offsets == {b"touchpoints": b"4"}
    assert value == b"first"


def _records(settings: Settings) -> list[Record]:
    touch = {"type": "click", "event_id": "c1", "event_time": "2026-11-02T09:00:00Z", "user_id": "ann",
             "campaign_id": "spring", "channel": "instagram"}
    buy = {"type": "purchase", "event_id": "p1", "event_time": "2026-11-02T10:00:00Z", "user_id": "ann",
           "order_id": "o1", "amount": "50", "currency": "EUR"}
    return [
        Record(settings.topic_touchpoints, 0, 0, b"ann", orjson.dumps(touch)),
        Record(settings.topic_conversions, 0, 0, b"ann", orjson.dumps(buy)),
    ]


def test_attribution_replay_after_restart_counts_once(settings: Settings) -> None:
    async def scenario() -> tuple[Sink, Sink, dict[bytes, bytes]]:
        records = _records(settings)
        first_sink, second_sink = Sink(), Sink()
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        await AttributionProcessor(settings, store, first_sink).process(records)
        # A new processor is what a restarted worker has: no memory, only Redis.
        await AttributionProcessor(settings, store, second_sink).process(records)
        stats = await client.hgetall(store.keys.person_stats(0))
        await store.close()
        return first_sink, second_sink, stats

    first_sink, second_sink, stats = run(scenario())
    assert len(first_sink.on(settings.topic_attributions)) == 1
    assert len(first_sink.on(settings.topic_credits)) == 1
    assert second_sink.messages == []
    assert stats[b"conversions_received"] == b"1"
    assert stats[b"conversions_attributed"] == b"1"
    assert stats[b"touchpoints"] == b"1"


async def roi_outputs(settings: Settings, batches: list[list[Record]]) -> Sink:
    """Process the batches with a new RoiProcessor, publish every changed campaign, and return what it sent."""
    sink = Sink()
    store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
    try:
        processor = RoiProcessor(settings, store, sink)
        for records in batches:
            await processor.process(records)
        await processor.emit_due(force=True)
    finally:
        await store.close()
    return sink


def test_roi_dead_letters_invalid_credits(settings: Settings) -> None:
    """A bad credit, alone or in an array, becomes a dead letter naming its field, and the valid ones still count."""
    def credit(credit_id: str, **changes: Any) -> dict[str, Any]:
        return {"type": "credit", "credit_id": credit_id, "conversion_id": credit_id, "campaign_id": "spring",
                "event_time": "2026-11-02T10:00:00.000Z", "weights": {"last_touch": "1"},
                "revenue": {"last_touch": "50"}, **changes}

    assert partition_for_key(b"spring", settings.campaign_partitions) == 1
    elsewhere = next(name for name in (f"autumn-{number}" for number in range(100))
                     if partition_for_key(name.encode(), settings.campaign_partitions) == 0)
    array = [credit("a1"), credit("a2", weights={"last_touch": "1.5"}), credit("a3", revenue={"last_touch": "NaN"})]
    records = [
        Record(settings.topic_credits, 1, 0, b"spring", orjson.dumps(array)),
        Record(settings.topic_credits, 1, 1, b"spring", orjson.dumps(credit("s1", event_time="yesterday"))),
        Record(settings.topic_credits, 1, 2, b"spring", orjson.dumps(credit("s2"))),
        # A stray item in front of a credit must not take the credit with it.
        Record(settings.topic_credits, 1, 3, b"spring", orjson.dumps([{"type": "oops"}, credit("b1")])),
        # A credit of a campaign whose aggregate lives on the other partition.
        Record(settings.topic_credits, 1, 4, b"spring", orjson.dumps(credit("w1", campaign_id=elsewhere))),
    ]

    sink = run(roi_outputs(settings, [records]))

    letters = sink.on(settings.topic_dead_letters)
    assert [(letter["source_offset"], letter["errors"][0]["field"]) for letter in letters] == [
        (0, "weights"), (0, "revenue"), (1, "event_time"), (3, "type"), (4, "(key)"),
    ]
    assert [letter["event_index"] for letter in letters] == [1, 2, None, 0, None]
    assert [letter["reason"] for letter in letters] == ["invalid"] * 4 + ["unsupported"]
    assert letters[0]["errors"][0]["reason"] == "a weight must lie between 0 and 1"
    # The wrong-partition credit names the campaign that decides its partition.
    assert letters[4]["errors"][0]["value"] == elsewhere
    lifetime = [u for u in sink.on(settings.topic_roi_updates) if u["window"] == "lifetime"]
    assert {u["campaign_id"] for u in lifetime} == {"spring"}
    assert Decimal(lifetime[-1]["models"]["last_touch"]["conversions"]) == 3
    assert Decimal(lifetime[-1]["models"]["last_touch"]["revenue"]) == 150


def test_roi_drops_repeated_credit(settings: Settings) -> None:
    credit = {"type": "credit", "credit_id": "p1:spring", "conversion_id": "p1", "campaign_id": "spring",
              "event_time": "2026-11-02T10:00:00.000Z", "weights": {"last_touch": "1"}, "revenue": {"last_touch": "50"}}
    value = orjson.dumps(credit)

    # The attribution agent re-sent the same credit after a crash: a new offset, the same id.
    sink = run(roi_outputs(settings, [[Record(settings.topic_credits, 1, offset, b"spring", value)] for offset in (0, 1)]))
    # A restarted worker: a new processor, only Redis.
    restarted_sink = run(roi_outputs(settings, [[Record(settings.topic_credits, 1, 2, b"spring", value)]]))
    for messages in (sink, restarted_sink):
        lifetime = [u for u in messages.on(settings.topic_roi_updates) if u["window"] == "lifetime"]
        assert lifetime, "no lifetime update was emitted"
        assert Decimal(lifetime[-1]["models"]["last_touch"]["conversions"]) == 1
        assert Decimal(lifetime[-1]["models"]["last_touch"]["revenue"]) == 50
    sequences = [u["sequence"] for u in sink.on(settings.topic_roi_updates) + restarted_sink.on(settings.topic_roi_updates)
                 if u["window"] == "lifetime"]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == len(sequences)


def test_fenced_apply_detects_lost_writes(settings: Settings) -> None:
    """Redis holding an older offset than the worker wrote (lost writes) rejects the batch with StateRolledBack."""

    async def scenario() -> tuple[list[tuple[int, int]], dict[bytes, bytes], bytes | None]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        offsets_key = store.keys.offsets(store.keys.person_tag(2))
        data_key = f"{store.keys.person_tag(2)}:data"
        first = FencedBatch(offsets_key)
        first.cover("touchpoints", 0, 9, -1)
        first.command("SET", data_key, "first")
        await store.apply(first)

        seen: list[tuple[int, int]] = []
        for stored in (b"4", None):
            # As if Redis came back from an older AOF: offsets 5..9 are gone, or all of them.
            if stored is None:
                await client.delete(offsets_key)
            else:
                await client.hset(offsets_key, "touchpoints", stored)
            after = FencedBatch(offsets_key)
            after.cover("touchpoints", 10, 12, 9)
            after.command("SET", data_key, "after")
            try:
                await store.apply(after)
            except StateRolledBack as exc:
                seen.append((exc.stored, exc.expected))
        offsets = await client.hgetall(offsets_key)
        value = await client.get(data_key)
        await store.close()
        return seen, offsets, value

    seen, offsets, value = run(scenario())
    assert seen == [(4, 9), (-1, 9)]
    assert offsets == {}
    assert value == b"first"


def test_fenced_apply_large_batch(settings: Settings) -> None:
    """A batch with more members than Lua's unpack() limit applies whole, offsets included."""

    async def scenario() -> tuple[int, dict[bytes, bytes]]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        offsets_key = store.keys.offsets(store.keys.person_tag(1))
        big_key = f"{store.keys.person_tag(1)}:big"
        batch = FencedBatch(offsets_key)
        batch.cover("conversions", 0, 99, -1)
        pairs: list[str | int | float | bytes] = []
        for index in range(30_000):
            pairs.extend((index, f"member-{index}"))
        batch.command_many("ZADD", big_key, pairs, group=2)
        await store.apply(batch)
        count = await client.zcard(big_key)
        offsets = await client.hgetall(offsets_key)
        await store.close()
        return int(count), offsets

    count, offsets = run(scenario())
    assert count == 30_000
    assert offsets == {b"conversions": b"99"}


@pytest.mark.parametrize("seed", range(12))
def test_zadd_capped_matches_commands(settings: Settings, seed: int) -> None:
    """ZADDCAPPED leaves each sorted set as ZADD, ZREMRANGEBYRANK, ZREMRANGEBYSCORE and PEXPIRE would."""
    generator = random.Random(seed)
    keep = generator.randint(1, 6)
    now_ms = 1_796_000_000_000
    ttl_ms = 600_000
    min_score = now_ms - ttl_ms
    people = [f"person-{number}" for number in range(4)]
    stored = {person: [(now_ms - generator.randint(0, 2 * ttl_ms), f"old-{index}") for index in range(generator.randint(0, 8))]
              for person in people}
    # Some people get more than Lua's unpack() limit of pairs at once.
    sizes = [generator.choice([0, 1, 3, 9, 2_500]) for _ in people]
    added = {person: [(now_ms - generator.randint(0, 2 * ttl_ms), f"new-{index}") for index in range(size)]
             for person, size in zip(people, sizes)}

    async def scenario() -> tuple[dict[str, list[Any]], dict[str, list[Any]], list[int]]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        tag = store.keys.person_tag(0)

        # The same stored sets under two prefixes: one gets ZADDCAPPED, the other the four commands.
        capped = FencedBatch(store.keys.offsets(tag))
        capped.cover("touchpoints", 0, 0, -1)
        by_key: dict[str, list[int | str]] = {}
        for person in people:
            for prefix in ("capped", "commands"):
                if stored[person]:
                    await client.zadd(f"{tag}:{prefix}:{person}", {member: score for score, member in stored[person]})
            if added[person]:
                by_key[f"{tag}:capped:{person}"] = [value for pair in added[person] for value in pair]
        capped.zadd_capped(by_key, keep, min_score, ttl_ms)

        commands = FencedBatch(store.keys.offsets(f"{tag}x"))
        commands.cover("touchpoints", 0, 0, -1)
        for person in people:
            if added[person]:
                key = f"{tag}:commands:{person}"
                commands.command_many("ZADD", key, [value for pair in added[person] for value in pair], group=2)
                commands.command("ZREMRANGEBYRANK", key, 0, -(keep + 1))
                commands.command("ZREMRANGEBYSCORE", key, "-inf", f"({min_score}")
                commands.command("PEXPIRE", key, ttl_ms)
        await store.apply(capped)
        await store.apply(commands)

        results: dict[str, dict[str, list[Any]]] = {"capped": {}, "commands": {}}
        ttls: list[int] = []
        for prefix, found in results.items():
            for person in people:
                key = f"{tag}:{prefix}:{person}"
                found[person] = await client.zrange(key, 0, -1, withscores=True)
                if added[person]:
                    ttls.append(int(await client.pttl(key)))
        await store.close()
        return results["capped"], results["commands"], ttls

    capped, commands, ttls = run(scenario())
    assert capped == commands
    assert all(0 < ttl <= ttl_ms for ttl in ttls)
    assert any(found for found in capped.values())


def test_fenced_command_rejects_oversize() -> None:
    batch = FencedBatch("ns:{p0}:offsets")
    with pytest.raises(ValueError, match="command_many"):
        batch.command("ZADD", "ns:{p0}:k", *range(5000))


def test_duplicate_after_restart_dropped(settings: Settings) -> None:
    """A conversion re-sent under a new offset after a restart is dropped by its event and order ids."""
    buy = {"type": "purchase", "event_id": "p9", "event_time": "2026-11-02T10:00:00Z", "user_id": "bob",
           "order_id": "o9", "amount": "80", "currency": "EUR"}
    resent_order = {**buy, "event_id": "p9-retry"}

    async def scenario() -> tuple[Sink, dict[bytes, bytes]]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        first = Sink()
        await AttributionProcessor(settings, store, first).process(
            [Record(settings.topic_conversions, 0, 0, b"bob", orjson.dumps(buy))]
        )
        restarted = Sink()
        await AttributionProcessor(settings, store, restarted).process([
            Record(settings.topic_conversions, 0, 1, b"bob", orjson.dumps(buy)),
            Record(settings.topic_conversions, 0, 2, b"bob", orjson.dumps(resent_order)),
        ])
        stats = await client.hgetall(store.keys.person_stats(0))
        await store.close()
        return restarted, stats

    restarted, stats = run(scenario())
    assert restarted.on(settings.topic_attributions) == []
    assert stats[b"conversions_received"] == b"1"
    assert stats[b"duplicates"] == b"2"


def test_misrouted_event_dead_lettered(settings: Settings) -> None:
    """An event on another partition than its person's murmur2 partition is rejected, not stored."""
    touch = {"type": "click", "event_id": "c7", "event_time": "2026-11-02T09:00:00Z", "user_id": "ann",
             "campaign_id": "spring", "channel": "instagram"}

    async def scenario() -> Sink:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        sink = Sink()
        # "ann" belongs on partition 0 of 2.
        spend = {"type": "spend", "spend_id": "s1", "campaign_id": "spring", "amount": "10", "currency": "EUR",
                 "period_start": "2026-11-02T00:00:00Z", "period_end": "2026-11-03T00:00:00Z"}
        await AttributionProcessor(settings, store, sink).process([
            Record(settings.topic_touchpoints, 1, 0, b"ann", orjson.dumps(touch)),
            # A definition on a person topic: the reason names the topic it belongs on.
            Record(settings.topic_touchpoints, 1, 1, b"spring", orjson.dumps(spend)),
        ])
        stored = await client.exists(store.keys.touchpoints(1, "ann"))
        await store.close()
        assert stored == 0
        return sink

    sink = run(scenario())
    letters = sink.on(settings.topic_dead_letters)
    assert len(letters) == 2
    assert letters[0]["reason"] == "unsupported"
    assert "partition 0" in letters[0]["errors"][0]["reason"]
    # The person id decides the partition, so the dead letter names it.
    assert (letters[0]["errors"][0]["field"], letters[0]["errors"][0]["value"]) == ("(key)", "ann")
    assert letters[1]["errors"][0]["reason"] == (
        f"event type does not belong on topic {settings.topic_touchpoints}; send it to {settings.topic_spend}"
    )


def test_rejected_messages_do_not_hold_progress(settings: Settings) -> None:
    """A topic that delivers only rejected or consent-dropped events stays quiet for the deal clock."""
    quiet_settings = settings.model_copy(update={"conversion_idle_release_s": 60.0})
    touch = {"type": "click", "event_id": "c9", "event_time": "2026-11-02T18:00:00Z", "user_id": "ann",
             "campaign_id": "spring", "channel": "instagram"}
    withheld = {"type": "purchase", "event_id": "p9", "event_time": "2026-11-02T12:00:00Z", "user_id": "ann",
                "order_id": "o9", "amount": "50", "currency": "EUR", "consent": False}

    async def scenario() -> list[tuple[int, bool]]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        processor = AttributionProcessor(quiet_settings, store, Sink())
        await processor.process([Record(settings.topic_touchpoints, 0, 0, b"ann", orjson.dumps(touch))])
        state = processor.partitions[0]
        # As if the conversions topic had been quiet since a minute before the load.
        state.input_arrival_s[settings.topic_conversions] -= 120.0
        seen = []
        for offset, value in enumerate([b"{not json", orjson.dumps(withheld)]):
            await processor.process([Record(settings.topic_conversions, 0, offset, b"ann", value)])
            progress = processor._progress(0, state, time.monotonic())
            seen.append((progress.progress_ms, progress.idle))
        await store.close()
        return seen

    evening_ms = int(datetime(2026, 11, 2, 18, tzinfo=timezone.utc).timestamp() * 1000)
    assert run(scenario()) == [(evening_ms, False), (evening_ms, False)]


def test_stale_worker_releases_nothing(settings: Settings) -> None:
    """A worker whose batch is refused as stale drops its cached state and releases nothing from it."""

    def click(offset: int) -> Record:
        event = {"type": "click", "event_id": f"c{offset}", "event_time": "2026-11-02T09:00:00Z", "user_id": "ann",
                 "campaign_id": "spring", "channel": "instagram"}
        return Record(settings.topic_touchpoints, 0, offset, b"ann", orjson.dumps(event))

    class CountingProcessor(AttributionProcessor):
        releases = 0

        async def _settle(self, partition: int, state: Any, in_task: bool = False) -> bool:
            self.releases += 1
            return await super()._settle(partition, state, in_task)

    async def scenario() -> tuple[int, int, bool]:
        client = connect(settings.redis_url)
        store = StateStore(client, Keys(settings.redis_namespace))
        new_owner = AttributionProcessor(settings, store, Sink())
        old_owner = CountingProcessor(settings, store, Sink())
        await new_owner.process([click(0)])
        await old_owner.process([click(0)])  # loads the partition at offset 0
        after_load = old_owner.releases
        await new_owner.process([click(1)])  # the partition moved on without the old owner
        await old_owner.process([click(1)])
        await store.close()
        return after_load, old_owner.releases, 0 in old_owner.partitions

    after_load, after_stale, still_cached = run(scenario())
    assert after_load == 1
    assert after_stale == after_load
    assert not still_cached


def test_roi_applies_credit_array_once(settings: Settings) -> None:
    """A packed credit array counts each credit once, also when re-sent, and dead-letters a bad item alone."""

    def credit(conversion_id: str) -> dict[str, Any]:
        return {"type": "credit", "credit_id": f"{conversion_id}:spring", "conversion_id": conversion_id,
                "campaign_id": "spring", "event_time": "2026-11-02T10:00:00.000Z",
                "weights": {"last_touch": "1"}, "revenue": {"last_touch": "20"}}

    value = orjson.dumps([credit("p1"), {"type": "credit", "credit_id": "bad"}, credit("p2")])

    # Re-sent after a crash of the attribution agent: a new offset, the same credit ids.
    sink = run(roi_outputs(settings, [[Record(settings.topic_credits, 1, offset, b"spring", value)] for offset in (0, 1)]))
    lifetime = [u for u in sink.on(settings.topic_roi_updates) if u["window"] == "lifetime"]
    letters = sink.on(settings.topic_dead_letters)
    assert lifetime, "no lifetime update was emitted"
    assert Decimal(lifetime[-1]["models"]["last_touch"]["conversions"]) == 2
    assert Decimal(lifetime[-1]["models"]["last_touch"]["revenue"]) == 40
    assert len(letters) == 2  # the bad item of each of the two messages
    assert {letter["event_index"] for letter in letters} == {1}
    assert {letter["errors"][0]["field"] for letter in letters} == {"campaign_id"}
