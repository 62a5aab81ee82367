"""The worker's Redis state on a real 3-node Redis Cluster, through roitrack's cluster client.

The module starts three redis-server nodes with ``--cluster-enabled yes`` on free
loopback ports, joins them with ``redis-cli --cluster create``, and stops them at
teardown. The processors run without Kafka, as in test_state_fencing.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, cast

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.cluster import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from roitrack.connections import redis_client, sync_redis_client
from roitrack.embedded import LOOPBACK_HOST
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.command_packing import fast_packing_class
from streams.records import Outgoing, Record
from streams.roi_agent import RoiProcessor
from streams.state import FencedBatch, Keys, StaleBatch, StateStore, connect, partition_for_key
from tests.integration.redis_servers import RedisNode, missing_redis_tools, redis_cluster

PERSON_PARTITIONS = 4
CAMPAIGN_PARTITIONS = 2

pytestmark = pytest.mark.skipif(bool(missing_redis_tools()), reason=missing_redis_tools() or "tools present")


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisNode]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


@pytest.fixture
def settings(cluster_nodes: list[RedisNode]) -> Iterator[Settings]:
    """Settings with the cluster client on the first node and a namespace of this test."""
    namespace = f"rt-cluster-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1",
        redis_url=f"redis://{LOOPBACK_HOST}:{cluster_nodes[0].port}/0",
        redis_cluster=True,
        redis_namespace=namespace,
        conversion_settle_s=0.0,
        conversion_idle_release_s=0.0,
        person_partitions=PERSON_PARTITIONS,
        campaign_partitions=CAMPAIGN_PARTITIONS,
    )
    yield settings
    client = sync_redis_client(settings)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


class Sink:
    """Collects what a processor sends."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        self.messages.extend(messages)

    def on(self, topic: str) -> list[Outgoing]:
        return [message for message in self.messages if message.topic == topic]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def node_ports_of(settings: Settings, keys: Sequence[str]) -> set[int]:
    """Return the ports of the cluster nodes that own ``keys``."""
    client = sync_redis_client(settings)
    try:
        assert isinstance(client, redis.RedisCluster)
        return {int(client.get_node_from_key(key).port) for key in keys}
    finally:
        client.close()


# --- clients ----------------------------------------------------------------


def test_clients_are_cluster_clients(settings: Settings) -> None:
    async_client = redis_client(settings)
    sync_client = sync_redis_client(settings)
    try:
        assert isinstance(async_client, aioredis.RedisCluster)
        assert isinstance(sync_client, redis.RedisCluster)
        assert len(sync_client.get_primaries()) == 3
        assert isinstance(connect(settings), aioredis.RedisCluster)
    finally:
        sync_client.close()
        run(async_client.aclose())


def test_partitions_spread_over_nodes(settings: Settings) -> None:
    keys = Keys(settings.redis_namespace)
    tags = [keys.offsets(keys.person_tag(partition)) for partition in range(16)]

    assert len(node_ports_of(settings, tags)) >= 2, "the hash tags of 16 partitions all map to one node"


# --- the fenced batch --------------------------------------------------------


def test_fenced_apply_on_cluster(settings: Settings) -> None:
    """The Lua script writes keys of one hash-tag slot together with the offsets, and fences replays."""

    async def scenario() -> tuple[bool, dict[bytes, bytes], bytes | None, int, type]:
        client = connect(settings)
        store = StateStore(client, Keys(settings.redis_namespace))
        try:
            tag = store.keys.person_tag(3)
            offsets_key = store.keys.offsets(tag)
            first = FencedBatch(offsets_key)
            first.cover("touchpoints", 0, 4, -1)
            first.command("SET", f"{tag}:data", "first")
            pairs: list[str | int | float | bytes] = []
            for index in range(5000):
                pairs.extend((index, f"member-{index}"))
            first.command_many("ZADD", store.keys.touchpoints(3, "ann"), pairs, group=2)
            await store.apply(first)

            replayed = FencedBatch(offsets_key)
            replayed.cover("touchpoints", 2, 6, -1)
            replayed.command("SET", f"{tag}:data", "replayed")
            rejected = False
            try:
                await store.apply(replayed)
            except StaleBatch:
                rejected = True
            offsets = await client.hgetall(offsets_key)
            value = await client.get(f"{tag}:data")
            members = await client.zcard(store.keys.touchpoints(3, "ann"))
            node_class = cast(aioredis.RedisCluster, client).get_node_from_key(offsets_key).connection_class
            return rejected, offsets, value, int(members), node_class
        finally:
            await store.close()

    rejected, offsets, value, members, node_class = run(scenario())

    # The 10,000-argument ZADD went through the worker's own command packer.
    assert node_class is fast_packing_class(Connection)

    assert rejected
    assert offsets == {b"touchpoints": b"4"}
    assert value == b"first"
    assert members == 5000


def test_fenced_apply_rejects_two_slots(settings: Settings) -> None:
    """A batch that mixes two partitions' keys cannot run as one script on a cluster."""
    keys = Keys(settings.redis_namespace)
    if key_slot(keys.person_tag(0).encode()) == key_slot(keys.person_tag(1).encode()):
        pytest.skip("partitions 0 and 1 hash to one slot in this namespace")

    async def scenario() -> None:
        store = StateStore(connect(settings), keys)
        try:
            batch = FencedBatch(keys.offsets(keys.person_tag(0)))
            batch.cover("touchpoints", 0, 0, -1)
            batch.command("SET", f"{keys.person_tag(1)}:data", "wrong slot")
            await store.apply(batch)
        finally:
            await store.close()

    # redis-py may reject the call itself, or pass it on and get Redis's CROSSSLOT error.
    with pytest.raises((RedisClusterException, ClusterCrossSlotError)):
        run(scenario())


# --- pipelines ---------------------------------------------------------------


def test_pipeline_across_slots(settings: Settings) -> None:
    """A non-transactional pipeline, as the agents use it, spans the nodes of the cluster."""
    keys = Keys(settings.redis_namespace)
    stats_keys = [keys.person_stats(partition) for partition in range(8)]
    flood_key = keys.flood_address("203.0.113.0", 1)
    assert len(node_ports_of(settings, [*stats_keys, flood_key, keys.coupons()])) >= 2

    async def scenario() -> list[Any]:
        client = connect(settings)
        try:
            pipe = client.pipeline(transaction=False)
            for index, key in enumerate(stats_keys):
                pipe.hincrby(key, "touchpoints", index + 1)
            pipe.sadd(flood_key, "c1", "c2")
            pipe.scard(flood_key)
            pipe.hset(keys.coupons(), mapping={"SPRING10": "spring"})
            await pipe.execute()

            reads = client.pipeline(transaction=False)
            for key in stats_keys:
                reads.hget(key, "touchpoints")
            reads.hmget(keys.coupons(), ["SPRING10"])
            results: list[Any] = await reads.execute()
            return results
        finally:
            await client.aclose()

    results = run(scenario())

    assert results[:8] == [str(index + 1).encode() for index in range(8)]
    assert results[8] == [b"spring"]


# --- both processors ---------------------------------------------------------


def _person_record(settings: Settings, offsets: dict[tuple[str, int], int], topic: str, event: dict[str, Any]) -> Record:
    """Build the Record a worker would read, on the partition Kafka's partitioner picks."""
    key = (event.get("user_id") or event["anonymous_id"]).encode()
    partition = partition_for_key(key, settings.person_partitions)
    offset = offsets.get((topic, partition), 0)
    offsets[(topic, partition)] = offset + 1
    return Record(topic, partition, offset, key, orjson.dumps(event))


def _click(event_id: str, person: dict[str, str], campaign_id: str, event_time: str) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id, "event_time": event_time, "campaign_id": campaign_id,
            "channel": "instagram", **person}


def _purchase(event_id: str, user_id: str, amount: str, event_time: str) -> dict[str, Any]:
    return {"type": "purchase", "event_id": event_id, "event_time": event_time, "user_id": user_id,
            "order_id": f"order-{event_id}", "amount": amount, "currency": "EUR"}


def _person_records(settings: Settings) -> list[Record]:
    """Clicks, an identity link and purchases for three people on several person partitions."""
    offsets: dict[tuple[str, int], int] = {}
    touches = settings.topic_touchpoints
    conversions = settings.topic_conversions
    records = [
        _person_record(settings, offsets, touches, _click("c1", {"user_id": "ann"}, "spring", "2026-11-02T09:00:00Z")),
        _person_record(settings, offsets, touches, _click("c2", {"user_id": "bob"}, "autumn", "2026-11-02T09:05:00Z")),
        _person_record(settings, offsets, touches, _click("c3", {"user_id": "bob"}, "spring", "2026-11-02T09:10:00Z")),
        # Carl clicked before logging in; the identify event links that anonymous id to him.
        _person_record(settings, offsets, touches, _click("c4", {"anonymous_id": "anon-carl"}, "autumn", "2026-11-02T09:15:00Z")),
        _person_record(settings, offsets, touches, {
            "type": "identify", "event_id": "i1", "event_time": "2026-11-02T09:20:00Z",
            "user_id": "carl", "anonymous_id": "anon-carl",
        }),
        _person_record(settings, offsets, conversions, _purchase("p1", "ann", "50", "2026-11-02T10:00:00Z")),
        _person_record(settings, offsets, conversions, _purchase("p2", "bob", "30", "2026-11-02T10:05:00Z")),
        _person_record(settings, offsets, conversions, _purchase("p3", "carl", "20", "2026-11-02T10:10:00Z")),
    ]
    return records


def _credit_records(settings: Settings, credits: list[Outgoing]) -> list[Record]:
    offsets: dict[int, int] = {}
    records = []
    for message in credits:
        partition = message.partition
        if partition is None:
            partition = partition_for_key(message.key.encode(), settings.campaign_partitions)
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        records.append(Record(settings.topic_credits, partition, offset, message.key.encode(), orjson.dumps(message.value)))
    return records


def test_processors_on_cluster(settings: Settings) -> None:
    """Attribution and ROI run end to end on the cluster, and a restart replays nothing twice."""
    person_records = _person_records(settings)
    person_partitions = {record.partition for record in person_records}
    assert len(person_partitions) >= 2, f"all people hash to one partition: {person_partitions}"

    async def scenario() -> tuple[Sink, Sink, Sink, list[dict[bytes, bytes]]]:
        store = StateStore(connect(settings), Keys(settings.redis_namespace))
        try:
            attribution_sink, restarted_sink, roi_sink = Sink(), Sink(), Sink()
            processor = AttributionProcessor(settings, store, attribution_sink)
            # Touchpoints first, so every anonymous click is stored before the release
            # of a conversion on another partition reads it.
            await processor.process([record for record in person_records if record.topic == settings.topic_touchpoints])
            await processor.process([record for record in person_records if record.topic == settings.topic_conversions])
            # A restarted worker reads the same records again: the stored offsets skip them.
            await AttributionProcessor(settings, store, restarted_sink).process(person_records)

            credits = _credit_records(settings, attribution_sink.on(settings.topic_credits))
            roi = RoiProcessor(settings, store, roi_sink)
            await roi.process(credits)
            await roi.process(credits)
            await roi.emit_due(force=True)

            stats = []
            for partition in range(settings.person_partitions):
                stats.append(await store.client.hgetall(store.keys.person_stats(partition)))
            return attribution_sink, restarted_sink, roi_sink, stats
        finally:
            await store.close()

    attribution_sink, restarted_sink, roi_sink, stats = run(scenario())

    attributions = {message.value["conversion_id"]: message.value for message in attribution_sink.on(settings.topic_attributions)}
    assert sorted(attributions) == ["p1", "p2", "p3"]
    assert restarted_sink.messages == []

    lifetime = {
        message.value["campaign_id"]: message.value
        for message in roi_sink.on(settings.topic_roi_updates)
        if message.value["window"] == "lifetime"
    }
    assert sorted(lifetime) == ["autumn", "spring"]
    # Last touch: ann (50) and bob (30, last click spring) credit spring; carl's
    # click under his anonymous id credits autumn (20) through the identity link.
    assert Decimal(lifetime["spring"]["models"]["last_touch"]["conversions"]) == 2
    assert Decimal(lifetime["spring"]["models"]["last_touch"]["revenue"]) == 80
    assert Decimal(lifetime["autumn"]["models"]["last_touch"]["conversions"]) == 1
    assert Decimal(lifetime["autumn"]["models"]["last_touch"]["revenue"]) == 20

    totals: dict[bytes, int] = {}
    for partition_stats in stats:
        for name, value in partition_stats.items():
            totals[name] = totals.get(name, 0) + int(value)
    assert totals[b"conversions_received"] == 3
    assert totals[b"conversions_attributed"] == 3
    assert totals[b"touchpoints"] == 4
    assert totals[b"identity_links"] == 1


def test_processors_reload_flushed_scripts_on_cluster(settings: Settings, cluster_nodes: list[RedisNode]) -> None:
    """After SCRIPT FLUSH on every node, as after a node restart, the processors load their scripts again."""
    person_records = _person_records(settings)

    nodes = [redis.Redis(host=LOOPBACK_HOST, port=node.port) for node in cluster_nodes]

    async def scenario() -> tuple[Sink, Sink]:
        store = StateStore(connect(settings), Keys(settings.redis_namespace))
        try:
            attribution_sink, roi_sink = Sink(), Sink()
            processor = AttributionProcessor(settings, store, attribution_sink)
            await processor.process([record for record in person_records if record.topic == settings.topic_touchpoints])
            for node in nodes:
                node.script_flush()
                node.config_resetstat()
            # The probe and the fenced write call their scripts directly, the release inside pipelines.
            await processor.process([record for record in person_records if record.topic == settings.topic_conversions])

            roi = RoiProcessor(settings, store, roi_sink)
            await roi.process(_credit_records(settings, attribution_sink.on(settings.topic_credits)))
            await roi.emit_due(force=True)
            return attribution_sink, roi_sink
        finally:
            await store.close()

    try:
        attribution_sink, roi_sink = run(scenario())
        noscript_errors = sum(int(node.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0)) for node in nodes)
    finally:
        for node in nodes:
            node.close()

    assert noscript_errors > 0, "no script call met the flushed cache, so the test did not cover the reload"
    attributed = sorted(message.value["conversion_id"] for message in attribution_sink.on(settings.topic_attributions))
    assert attributed == ["p1", "p2", "p3"]
    lifetime = {
        message.value["campaign_id"]: message.value
        for message in roi_sink.on(settings.topic_roi_updates)
        if message.value["window"] == "lifetime"
    }
    assert Decimal(lifetime["spring"]["models"]["last_touch"]["revenue"]) == 80
    assert Decimal(lifetime["autumn"]["models"]["last_touch"]["revenue"]) == 20


# --- the alert store -----------------------------------------------------------


def test_alert_store_on_cluster(settings: Settings) -> None:
    """The alerts consumer's transaction, outbox script and reads work through the cluster client."""
    from datetime import datetime, timezone

    from roitrack.alerts.state import RuleState, StateKey
    from roitrack.alerts.store import TOPIC_SINK, AlertKeys, AlertStore, OutboxEntry
    from schemas.outputs import Alert

    now = datetime.now(timezone.utc)
    alert = Alert(
        alert_id="c" * 32, breach_id="d" * 32, rule_id="roi", rule_kind="roi_below", state="fired",
        campaign_id="spring", campaign_name=None, window="lifetime", model="last_touch", metric="roi",
        observed=Decimal(-1), threshold=Decimal(0), baseline=None, spend=Decimal(10), currency="EUR",
        update_sequence=3, breach_started_at=now, observed_at=now, emitted_at=now, message_en="en", message_nl="nl",
    )
    key = StateKey("roi", "spring", "lifetime")
    state = RuleState(partition=1, campaign_name=None, currency="EUR", sequence=3, spend=Decimal(10), phase="firing")
    client = sync_redis_client(settings)
    store = AlertStore(client, AlertKeys(settings.redis_namespace, "group-1"))
    try:
        store.write({key: state}, {"lifetime|spring": 3}, [OutboxEntry(alert, 1, (TOPIC_SINK, "webhook:team"))])

        assert store.load_states() == {key: state}
        assert store.load_sequences() == {"lifetime|spring": 3}
        assert store.outbox() == [OutboxEntry(alert, 1, ("topic", "webhook:team"))]

        store.sink_done(alert.alert_id, TOPIC_SINK)
        assert store.outbox()[0].sinks == ("webhook:team",)
        store.sink_done(alert.alert_id, "webhook:team")
        assert store.outbox() == []
    finally:
        client.close()
