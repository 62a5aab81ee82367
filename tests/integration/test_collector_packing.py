"""The collector packs concurrent requests' events per partition, on the real broker, and the worker credits them.

The first test reads the packed messages back from Kafka and checks what a
consumer relies on: every event once, each on the partition its own key picks,
each person's events in request order, and the packing bounds. The second runs
a worker on the messages and waits for every purchase's attribution.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import defaultdict
from typing import Any

import orjson

from roitrack.settings import Settings
from roitrack.topics import create_topics
from streams.state import partition_for_key
from tests.harness import attribution_for, click, ids, purchase, unique_settings
from tests.integration.test_collector import Message, client, read_messages, run, running_collector

TOKEN = "packing-token-" + uuid.uuid4().hex
PEOPLE = 24
EVENTS_PER_PERSON = 10
PIXEL_HITS = 120
MAX_EVENTS = 16
PACK_WITHIN_S = 0.05


def events_of(message: Message) -> list[dict[str, Any]]:
    decoded = orjson.loads(message.raw)
    return decoded if isinstance(decoded, list) else [decoded]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics:\n{text}"
    return float(found.group(1))


async def post_batch(session: Any, base: str, events: list[dict[str, Any]]) -> int:
    async with session.post(f"{base}/v1/events", json=events, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        await response.read()
        return int(response.status)


def test_concurrent_requests_share_messages(kafka_bootstrap: str) -> None:
    settings = unique_settings(
        kafka_bootstrap,
        "redis://127.0.0.1:1/0",
        collector_tokens=(TOKEN,),
        collector_pack_within_s=PACK_WITHIN_S,
        collector_pack_max_events=MAX_EVENTS,
    )
    create_topics(settings, kafka_bootstrap)
    campaign = ids("camp")
    people = [ids("person") for _ in range(PEOPLE)]
    batches = [
        [click(person, campaign, f"2026-11-02T10:{minute:02d}:00Z", event_id=f"{person}-{minute}") for minute in range(EVENTS_PER_PERSON)]
        for person in people
    ]

    async def scenario() -> tuple[list[int], list[int], str]:
        async with running_collector(settings) as (_, base), client(cookies=False) as session:
            batch_statuses = asyncio.gather(*(post_batch(session, base, batch) for batch in batches))

            async def pixel(number: int) -> int:
                url = f"{base}/p.gif?cid={campaign}&ch=instagram&uid=pixel-{number}&eid=pixel-{number}-{campaign}"
                async with session.get(url) as response:
                    await response.read()
                    return int(response.status)

            pixel_statuses = asyncio.gather(*(pixel(number) for number in range(PIXEL_HITS)))
            statuses = await batch_statuses
            pixels = await pixel_statuses
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
        return list(statuses), list(pixels), metrics

    statuses, pixels, metrics = run(scenario)

    assert statuses == [200] * PEOPLE
    assert pixels == [200] * PIXEL_HITS
    messages = [message for message in read_messages(settings, settings.topic_touchpoints)]
    events = [item for message in messages for item in events_of(message)]
    expected = PEOPLE * EVENTS_PER_PERSON + PIXEL_HITS
    assert len(events) == expected
    assert len({item["event_id"] for item in events}) == expected, "every event exactly once"
    assert len(messages) <= expected / 4, f"{len(messages)} messages for {expected} events: little packing"
    assert metric(metrics, "roitrack_collector_kafka_messages") == len(messages)
    assert metric(metrics, "roitrack_collector_kafka_message_events") == expected

    order: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        assert message.key is not None
        assert message.partition == partition_for_key(message.key.encode(), settings.person_partitions)
        items = events_of(message)
        assert len(items) <= MAX_EVENTS
        assert len(message.raw) <= settings.collector_pack_max_bytes
        for item in items:
            assert partition_for_key(item["user_id"].encode(), settings.person_partitions) == message.partition
            order[item["user_id"]].append(item["event_id"])
    for person in people:
        assert order[person] == [f"{person}-{minute}" for minute in range(EVENTS_PER_PERSON)], "request order kept"


def test_worker_credits_packed_collector_events(worker_settings: Settings) -> None:
    settings = worker_settings.model_copy(
        update={"collector_tokens": (TOKEN,), "collector_pack_within_s": PACK_WITHIN_S}
    )
    campaign = ids("camp")
    people = [ids("person") for _ in range(12)]
    purchases = {person: purchase(person, "2026-11-02T11:00:00Z", amount="20.00") for person in people}

    async def scenario() -> list[int]:
        async with running_collector(settings) as (_, base), client(cookies=False) as session:
            requests = [
                post_batch(session, base, [click(person, campaign, "2026-11-02T10:30:00Z"), purchases[person]])
                for person in people
            ]
            return list(await asyncio.gather(*requests))

    assert run(scenario) == [200] * len(people)

    conversions = [message for message in read_messages(settings, settings.topic_conversions)]
    assert any(len(events_of(message)) > 1 for message in conversions), "some purchases shared a message"
    for person in people:
        attribution = attribution_for(settings, purchases[person]["event_id"])
        assert attribution["basis"] == "touchpoints"
        assert attribution["revenue"] == "20.00"
        for model, credits in attribution["credits"].items():
            assert [credit["campaign_id"] for credit in credits] == [campaign], model


