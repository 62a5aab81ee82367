"""The collector's Packer against a recording producer: bounds, order, timers and failures.

tests/integration/test_collector_packing.py runs it against the real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from roitrack.collector.ingest import CollectorStats, Ingestor, RecentIds
from roitrack.collector.packer import Packer
from roitrack.settings import load_settings
from streams.state import partition_for_key

T = TypeVar("T")
PARTITIONS = 4
TOPIC = "touchpoints"


@dataclass
class Sent:
    topic: str
    key: bytes
    value: bytes
    partition: int | None

    def events(self) -> list[dict[str, Any]]:
        decoded = orjson.loads(self.value)
        return decoded if isinstance(decoded, list) else [decoded]


@dataclass
class RecordingProducer:
    """Records every message. Its deliveries resolve at once unless a failure is set."""

    sent: list[Sent] = field(default_factory=list)
    fail_send: BaseException | None = None
    fail_delivery: BaseException | None = None

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None = None) -> asyncio.Future[Any]:
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append(Sent(topic, key, value, partition))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_delivery is not None:
            delivery.set_exception(self.fail_delivery)
        else:
            delivery.set_result(len(self.sent))
        return delivery


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def event(person: str, number: int, pad: int = 0) -> bytes:
    return orjson.dumps({"user_id": person, "n": number, "pad": "x" * pad})


def people_on(partition: int, count: int) -> list[str]:
    """Return ``count`` person ids whose key hashes to ``partition``."""
    found: list[str] = []
    candidate = 0
    while len(found) < count:
        person = f"person-{candidate}"
        if partition_for_key(person.encode(), PARTITIONS) == partition:
            found.append(person)
        candidate += 1
    return found


def test_events_in_window_share_message() -> None:
    producer = RecordingProducer()

    async def scenario() -> list[Any]:
        packer = Packer(producer, within_s=0.05, max_events=100, max_bytes=64 * 1024)
        futures = []
        for number in range(40):
            person = f"person-{number % 8}"
            futures.append(await packer.send(TOPIC, person.encode(), event(person, number)))
        results = await asyncio.gather(*futures)
        await packer.stop()
        return results

    results = run(scenario)

    partitions = {partition_for_key(f"person-{n}".encode(), PARTITIONS) for n in range(8)}
    assert len(producer.sent) == len(partitions), "one message per partition that received events"
    assert all(isinstance(result, int) for result in results)
    seen = []
    for message in producer.sent:
        assert message.partition is not None
        assert partition_for_key(message.key, PARTITIONS) == message.partition
        for item in message.events():
            assert partition_for_key(item["user_id"].encode(), PARTITIONS) == message.partition
            seen.append(item["n"])
    assert sorted(seen) == list(range(40))


def test_person_order_kept_across_packs() -> None:
    producer = RecordingProducer()
    people = people_on(1, 3)

    async def scenario() -> None:
        packer = Packer(producer, within_s=0.05, max_events=4, max_bytes=64 * 1024)
        futures = []
        for number in range(30):
            person = people[number % 3]
            futures.append(await packer.send(TOPIC, person.encode(), event(person, number)))
            if number % 7 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
        await packer.stop()

    run(scenario)

    assert all(len(message.events()) <= 4 for message in producer.sent)
    assert len(producer.sent) == 8
    numbers = [item["n"] for message in producer.sent for item in message.events()]
    assert numbers == list(range(30))


def test_byte_bound_and_large_event() -> None:
    producer = RecordingProducer()
    person = people_on(2, 1)[0]
    max_bytes = 1024

    async def scenario() -> None:
        packer = Packer(producer, within_s=0.05, max_events=1000, max_bytes=max_bytes)
        futures = [await packer.send(TOPIC, person.encode(), event(person, number, pad=200)) for number in range(10)]
        futures.append(await packer.send(TOPIC, person.encode(), event(person, 10, pad=2000)))
        futures.append(await packer.send(TOPIC, person.encode(), event(person, 11)))
        await asyncio.gather(*futures)
        await packer.stop()

    run(scenario)

    large = [message for message in producer.sent if len(message.value) > max_bytes]
    assert len(large) == 1, "an event over the bound goes out on its own"
    assert large[0].value.startswith(b"{"), "unwrapped"
    assert large[0].partition == 2
    assert all(len(message.value) <= max_bytes for message in producer.sent if message is not large[0])
    numbers = [item["n"] for message in producer.sent for item in message.events()]
    assert numbers == list(range(12))


def test_timer_closes_lone_pack() -> None:
    producer = RecordingProducer()

    async def scenario() -> float:
        packer = Packer(producer, within_s=0.02, max_events=100, max_bytes=64 * 1024)
        loop = asyncio.get_running_loop()
        started = loop.time()
        future = await packer.send(TOPIC, b"alone", event("alone", 1))
        await future
        waited = loop.time() - started
        await packer.stop()
        return waited

    waited = run(scenario)

    assert 0.015 <= waited < 1.0
    assert len(producer.sent) == 1
    assert producer.sent[0].value == event("alone", 1), "a pack of one event is sent unwrapped"


def test_unpacked_events_keep_order() -> None:
    producer = RecordingProducer()

    async def scenario() -> None:
        packer = Packer(producer, within_s=0, max_events=100, max_bytes=64 * 1024)
        futures = [await packer.send(TOPIC, b"p", event("p", number)) for number in range(5)]
        futures.append(await packer.send("dead-letters", b"p", b'{"reason":"x"}', packable=False))
        await asyncio.gather(*futures)
        await packer.stop()

    run(scenario)

    assert [message.partition for message in producer.sent[:5]] == [partition_for_key(b"p", PARTITIONS)] * 5
    assert producer.sent[5].partition is None, "the producer's partitioner places an unpackable event"
    assert [message.value for message in producer.sent[:5]] == [event("p", number) for number in range(5)]
    assert producer.sent[5].topic == "dead-letters"


def test_stop_sends_open_packs() -> None:
    producer = RecordingProducer()

    async def scenario() -> list[Any]:
        packer = Packer(producer, within_s=30, max_events=100, max_bytes=64 * 1024)
        futures = [await packer.send(TOPIC, f"p{n}".encode(), event(f"p{n}", n)) for n in range(6)]
        assert producer.sent == []
        await packer.stop()
        return list(await asyncio.gather(*futures))

    results = run(scenario)

    assert len(results) == 6
    assert sorted(item["n"] for message in producer.sent for item in message.events()) == list(range(6))


@pytest.mark.parametrize("where", ["send", "delivery"])
def test_failure_reaches_every_event(where: str) -> None:
    error = KafkaTimeoutError("broker gone")
    producer = RecordingProducer(**{f"fail_{where}": error})
    person = people_on(0, 1)[0]

    async def scenario() -> list[Any]:
        packer = Packer(producer, within_s=0.01, max_events=100, max_bytes=64 * 1024)
        futures = [await packer.send(TOPIC, person.encode(), event(person, n)) for n in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        # The packer keeps going after a failure.
        producer.fail_send = producer.fail_delivery = None
        after = await packer.send(TOPIC, person.encode(), event(person, 3))
        results.append(await after)
        await packer.stop()
        return results

    results = run(scenario)

    assert results[:3] == [error] * 3
    assert not isinstance(results[3], BaseException)
    assert producer.sent[-1].events() == [{"user_id": person, "n": 3, "pad": ""}]


def test_invalid_settings_rejected() -> None:
    with pytest.raises(ValueError, match="within_s"):
        Packer(RecordingProducer(), within_s=-1, max_events=1, max_bytes=1024)
    with pytest.raises(ValueError, match="max_events"):
        Packer(RecordingProducer(), within_s=0.01, max_events=0, max_bytes=1024)


def test_urgent_event_closes_partition_packs() -> None:
    producer = RecordingProducer()
    person, other = people_on(3, 2)
    elsewhere = people_on(0, 1)[0]

    async def scenario() -> float:
        packer = Packer(producer, within_s=30, max_events=100, max_bytes=64 * 1024)
        loop = asyncio.get_running_loop()
        await packer.send(TOPIC, person.encode(), event(person, 1))
        await packer.send(TOPIC, elsewhere.encode(), event(elsewhere, 2))
        await packer.send("conversions", other.encode(), event(other, 3))
        started = loop.time()
        await (await packer.send("conversions", person.encode(), event(person, 4), urgent=True))
        waited = loop.time() - started
        assert [(message.topic, [item["n"] for item in message.events()]) for message in producer.sent] == [
            (TOPIC, [1]),
            ("conversions", [3, 4]),
        ], "the partition's touchpoints first, then the purchase's pack; other partitions keep waiting"
        await packer.stop()
        return waited

    assert run(scenario) < 5
    assert [item["n"] for item in producer.sent[-1].events()] == [2]


def test_large_urgent_event_follows_touchpoints() -> None:
    producer = RecordingProducer()
    person = people_on(1, 1)[0]

    async def scenario() -> None:
        packer = Packer(producer, within_s=30, max_events=100, max_bytes=1024)
        touch = await packer.send(TOPIC, person.encode(), event(person, 1))
        purchase = await packer.send("conversions", person.encode(), event(person, 2, pad=2000), urgent=True)
        await asyncio.gather(touch, purchase)
        await packer.stop()

    run(scenario)

    assert [(message.topic, message.events()[0]["n"]) for message in producer.sent] == [(TOPIC, 1), ("conversions", 2)]


@dataclass
class StalledProducer(RecordingProducer):
    """Waits in send for one partition until released, as aiokafka waits while a partition's buffer is full."""

    stalled_partition: int = 0
    release: asyncio.Event | None = None

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None = None) -> asyncio.Future[Any]:
        if partition == self.stalled_partition and self.release is not None:
            await self.release.wait()
        return await super().send(topic, value, key, partition)


def test_stalled_partition_delays_only_itself() -> None:
    producer = StalledProducer()
    stalled = people_on(0, 1)[0]
    moving = people_on(2, 1)[0]

    async def scenario() -> tuple[bool, list[int]]:
        producer.release = asyncio.Event()
        packer = Packer(producer, within_s=0.01, max_events=100, max_bytes=64 * 1024)
        blocked = await packer.send(TOPIC, stalled.encode(), event(stalled, 1))
        flowing = [await packer.send(TOPIC, moving.encode(), event(moving, n)) for n in range(2, 4)]
        await asyncio.wait_for(asyncio.gather(*flowing), timeout=5)
        blocked_done = blocked.done()
        producer.release.set()
        await blocked
        await packer.stop()
        return blocked_done, [item["n"] for message in producer.sent for item in message.events()]

    blocked_done, numbers = run(scenario)

    assert blocked_done is False
    assert numbers == [2, 3, 1]


def test_cancelled_request_spares_pack_neighbours() -> None:
    producer = RecordingProducer()
    settings = load_settings(kafka_bootstrap="127.0.0.1:1")
    person = people_on(partition_for_key(b"x", PARTITIONS), 1)[0]

    def click(number: int) -> dict[str, Any]:
        return {"type": "click", "event_id": f"click-{number}", "event_time": "2026-11-02T10:00:00Z",
                "user_id": person, "campaign_id": "spring", "channel": "instagram"}

    async def scenario() -> tuple[list[str], dict[str, dict[str, int]]]:
        packer = Packer(producer, within_s=0.2, max_events=100, max_bytes=64 * 1024)
        stats = CollectorStats()
        ingestor = Ingestor(settings, packer, stats, RecentIds())
        first = asyncio.create_task(ingestor.ingest("batch", [click(1)]))
        second = asyncio.create_task(ingestor.ingest("batch", [click(2)]))
        await asyncio.sleep(0.05)
        first.cancel()
        outcomes = await second
        await packer.stop()
        return [outcome.status for outcome in outcomes], stats.as_dict()

    statuses, stats = run(scenario)

    assert statuses == ["accepted"]
    assert "failed" not in stats.get("batch", {})
    assert len(producer.sent) == 1
    assert [item["event_id"] for item in producer.sent[0].events()] == ["click-1", "click-2"]
