"""Measure how long the broker takes to hand a new message to a consumer whose fetch is already waiting.

A Kafka broker returns a fetch response as soon as ``fetch_min_bytes`` (1 by
default) are available, or after ``fetch_max_wait_ms``. Faust 0.15 creates its
consumer with ``fetch_max_wait_ms=1500``, so on a broker that waits out more
of that time, every hop through a topic adds delay. The probe produces one
message at a time at a steady pace to a one-partition topic and records, for
a few fetch waits, the time from send to receipt.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench.outputs import percentile

#: Faust 0.15's fixed value (faust/transport/drivers/aiokafka.py), and shorter ones to compare.
FETCH_WAITS_MS = (1500, 500, 100)
_MESSAGES = 25
_GAP_S = 0.137  # not a divisor of the waits, so sends fall at every point of a waiting fetch


async def _probe_one(bootstrap: str, fetch_max_wait_ms: int, run_id: str) -> dict[str, float]:
    topic = f"bench-{run_id}-fetch-probe-{fetch_max_wait_ms}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-fetch-probe")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await producer.start()
    await consumer.start()
    delays_ms: list[float] = []
    try:
        await asyncio.sleep(1.0)  # let the consumer reach its first waiting fetch

        async def receive() -> None:
            async for message in consumer:
                delays_ms.append((time.time() - float(message.value or b"0")) * 1000)
                if len(delays_ms) >= _MESSAGES:
                    return

        receiver = asyncio.create_task(receive())
        for _ in range(_MESSAGES):
            await producer.send_and_wait(topic, str(time.time()).encode())
            await asyncio.sleep(_GAP_S)
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "p50_ms": round(percentile(delays_ms, 0.5), 1),
        "max_ms": round(max(delays_ms), 1),
    }


def probe_fetch_delay(bootstrap: str, run_id: str) -> list[dict[str, float]]:
    """Return the median and maximum delivery delay for each fetch wait in FETCH_WAITS_MS.

    The probe topics' names contain ``run_id``, so the run's cleanup deletes them.
    """
    return [asyncio.run(_probe_one(bootstrap, wait_ms, run_id)) for wait_ms in FETCH_WAITS_MS]
