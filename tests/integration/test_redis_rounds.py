"""Redis rounds on the real server: the partition batches' round trips, and a round after SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio.connection as async_connection
from redis.exceptions import ResponseError

from bench.services import delete_namespace
from roitrack.embedded import LocalRedis, free_port
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Record
from streams.roi_agent import RoiProcessor
from streams.state import Keys, Round, StateStore, connect, partition_for_key
from tests.integration.test_state_fencing import Sink

PARTITIONS = 2


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    namespace = f"rt-rounds-{uuid.uuid4().hex[:8]}"
    yield Settings(kafka_bootstrap="127.0.0.1:1", redis_url=redis_url, redis_namespace=namespace,
                   conversion_settle_s=0.0, conversion_idle_release_s=0.0,
                   person_partitions=PARTITIONS, campaign_partitions=PARTITIONS)
    delete_namespace(redis_url, namespace)


class RoundTrips:
    """Counts the requests this process sends to Redis: a pipeline or a single command counts once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = async_connection.AbstractConnection.send_packed_command

        async def counted(connection: Any, command: Any, check_health: bool = True) -> None:
            self.count += 1
            await original(connection, command, check_health)

        monkeypatch.setattr(async_connection.AbstractConnection, "send_packed_command", counted)


async def load_scripts(client: Any, *scripts: Any) -> None:
    """Load the scripts first, so that a server without them (another test flushed them) adds no round trips."""
    for script in scripts:
        await client.script_load(script.script)


def person_record(settings: Settings, topic: str, offset: int, event: dict[str, Any]) -> Record:
    key = event["user_id"].encode()
    return Record(topic, partition_for_key(key, PARTITIONS), offset, key, orjson.dumps(event))


def click(event_id: str, minute: int) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id, "event_time": f"2026-11-02T10:{minute:02d}:00Z",
            "user_id": "ann", "campaign_id": "spring", "channel": "instagram"}


def test_releasing_run_four_round_trips(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe, fenced write, one read round and one write round, for a batch that releases a conversion."""
    purchase = {"type": "purchase", "event_id": "p1", "event_time": "2026-11-02T10:05:00Z", "user_id": "ann",
                "order_id": "o1", "amount": "40", "currency": "EUR"}
    trips = RoundTrips(monkeypatch)

    async def scenario() -> tuple[int, Sink, AttributionProcessor]:
        sink = Sink()
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = AttributionProcessor(settings, store, sink)
            await load_scripts(store.client, store._fenced_apply, processor.probe._script, processor.releaser._read_touches,
                               processor._finish_release, processor.social._resolve)
            await processor.process([person_record(settings, settings.topic_touchpoints, 0, click("c1", 0))])
            before = trips.count
            await processor.process([
                person_record(settings, settings.topic_touchpoints, 1, click("c2", 1)),
                person_record(settings, settings.topic_conversions, 0, purchase),
            ])
            return trips.count - before, sink, processor
        finally:
            await store.close()

    trips_made, sink, processor = asyncio.run(scenario())
    credits = [item for value in sink.on(settings.topic_credits) for item in (value if isinstance(value, list) else [value])]
    assert sum(Decimal(item["revenue"]["last_touch"]) for item in credits if item.get("type") == "credit") == 40
    state = processor.partitions[partition_for_key(b"ann", PARTITIONS)]
    assert not state.pending, "the purchase was not released"
    assert not state.referrals, "the purchase's referral decision was not made"
    assert trips_made == 4


def test_roi_run_two_round_trips(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of new credits of a known campaign: one read round (dedup and history), then the fenced write."""

    def credit(conversion_id: str) -> Record:
        value = {"type": "credit", "credit_id": f"{conversion_id}:spring", "conversion_id": conversion_id,
                 "campaign_id": "spring", "event_time": "2026-11-02T10:00:00.000Z",
                 "weights": {"last_touch": "1"}, "revenue": {"last_touch": "20"}}
        return Record(settings.topic_credits, 1, int(conversion_id[1:]), b"spring", orjson.dumps([value]))

    trips = RoundTrips(monkeypatch)

    async def scenario() -> tuple[int, dict[Any, Any]]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = RoiProcessor(settings, store, Sink())

            async def no_emit(force: bool = False) -> None:
                """Count the batch's own round trips, not the publishing of updates."""

            monkeypatch.setattr(processor, "emit_due", no_emit)
            await load_scripts(store.client, store._fenced_apply)
            await processor.process([credit("p0")])
            before = trips.count
            await processor.process([credit("p1"), credit("p2")])
            trips_made = trips.count - before
            history = await store.client.hgetall(store.keys.history(1, "spring"))
            return trips_made, history
        finally:
            await store.close()

    trips_made, history = asyncio.run(scenario())
    (bucket,) = history.values()
    assert orjson.loads(bucket)["r"]["last_touch"] == "60"
    assert trips_made == 2


def test_round_reruns_flushed_script() -> None:
    """After SCRIPT FLUSH the script call runs again on its own; the commands around it keep their replies."""
    local = LocalRedis()  # its own server: SCRIPT FLUSH empties the script cache of every client
    key = "rt-rounds-counter"

    async def scenario(url: str) -> tuple[list[Any], bool]:
        client = connect(url)
        try:
            script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            await script(keys=[key], args=[1])
            await client.script_flush()
            rounds = Round(client)
            rounds.command("GET", key)
            rounds.script(script, [key], [5])
            rounds.command("GET", key)
            replies = await rounds.execute()
            loaded = (await client.script_exists(script.sha))[0]
            return replies, loaded
        finally:
            await client.aclose()

    try:
        replies, loaded = asyncio.run(scenario(local.ensure(f"redis://127.0.0.1:{free_port()}/0")))
    finally:
        local.stop()
    assert replies == [b"1", 6, b"1"]  # the second GET ran before the script ran again
    assert loaded


def test_round_raises_command_error(redis_url: str) -> None:
    key = f"rt-rounds-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(redis_url)
    sync.set(key, "text")

    async def scenario() -> None:
        client = connect(redis_url)
        try:
            rounds = Round(client)
            rounds.command("GET", key)
            rounds.command("HGETALL", key)
            await rounds.execute()
        finally:
            await client.aclose()

    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            asyncio.run(scenario())
    finally:
        sync.delete(key)
        sync.close()


def test_failed_referral_write_keeps_counts(settings: Settings) -> None:
    """The write round's two scripts are independent: when one fails, the other's conversions are still counted."""
    purchase = {"type": "purchase", "event_id": "p1", "event_time": "2026-11-02T10:05:00Z", "user_id": "ann",
                "order_id": "o1", "amount": "40", "currency": "EUR"}

    async def scenario() -> tuple[BaseException | None, int, float | None, int]:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = AttributionProcessor(settings, store, Sink())
            # Stands for any error of the referral script in the write round (a busy or killed script, OOM).
            processor.social._resolve = store.client.register_script("return redis.error_reply('resolve failed')")
            raised = None
            try:
                await processor.process([
                    person_record(settings, settings.topic_touchpoints, 0, click("c1", 0)),
                    person_record(settings, settings.topic_conversions, 0, purchase),
                ])
            except ResponseError as exc:
                raised = exc
            counter = processor.metrics.registry.get_sample_value(
                "roitrack_attribution_events_total", {"outcome": "conversions_attributed"})
            pending = await store.client.zcard(store.keys.pending(partition_for_key(b"ann", PARTITIONS)))
            return raised, processor.stats["conversions_attributed"], counter, pending
        finally:
            await store.close()

    raised, counted, counter, pending = asyncio.run(scenario())
    assert raised is not None and "resolve failed" in str(raised)
    assert pending == 0  # the release script ran
    assert counted == 1
    assert counter == 1


def test_failed_ahead_plan_retrieved(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A plan classified ahead that raised, for a run that reads its partition again instead, logs no asyncio error."""
    partitions = 4
    gap_settings = settings.model_copy(update={"person_partitions": partitions})

    def person_on(partition: int) -> str:
        return next(f"p{number}" for number in range(1000)
                    if partition_for_key(f"p{number}".encode(), partitions) == partition)

    def record(partition: int, offset: int) -> Record:
        person = person_on(partition)
        event = {"type": "click", "event_id": f"c{partition}", "event_time": "2026-11-02T10:01:00Z",
                 "user_id": person, "campaign_id": "spring", "channel": "instagram"}
        return Record(settings.topic_touchpoints, partition, offset, person.encode(), orjson.dumps(event))

    class Failing(AttributionProcessor):
        armed = False

        def _classifying(self, plan: Any, partition: int, *args: Any) -> Any:
            if partition == 2 and self.armed:
                raise RuntimeError("classify failed for partition 2")
            return super()._classifying(plan, partition, *args)

    async def scenario() -> None:
        store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
        try:
            processor = Failing(gap_settings, store, Sink())
            for partition in (1, 2, 3):
                await processor.load(partition)
            processor.armed = True
            # Partition 2 resumes past a gap (offset 5, nothing stored), so its run reads it again and
            # never classifies. Partition 3's run then drops the failed plan.
            await processor.process([record(1, 0), record(2, 5), record(3, 0)])
        finally:
            await store.close()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()

    assert [entry.getMessage() for entry in caplog.records if entry.name == "asyncio"] == []
