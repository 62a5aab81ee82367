"""Measure how long the broker takes to hand a new message to a consumer whose fetch is already waiting.

A Kafka broker returns a fetch response as soon as ``fetch_min_bytes`` (1 by
default) are available, or after ``fetch_max_wait_ms``. Faust 0.15 creates its
consumer with ``fetch_max_wait_ms=1500``, so on a broker that waits out more
of that time, every hop through a topic adds delay. The probes produce one
message at a time at a steady pace to a one-partition topic and record, for
a few fetch waits, the time from send to receipt. ``probe_fetch_delay`` reads
with a bare aiokafka consumer. ``probe_worker_delivery`` reads with a Faust
agent of an app built like the worker's (``streams.app.create_faust_app``), so
it measures the consumer that ``ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS`` configures.

Usage: ``python -m bench.fetch_probe [--kafka-bootstrap HOST:PORT]``. Without a
bootstrap it starts a tansu broker and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from bench.outputs import percentile
from bench.services import delete_topics
from roitrack.embedded import EmbeddedBroker
from roitrack.settings import Settings, load_settings
from streams.app import create_faust_app

#: Faust 0.15's fixed value (faust/transport/drivers/aiokafka.py), and shorter ones to compare.
FETCH_WAITS_MS = (1500, 500, 100)
#: Faust 0.15's fixed fetch wait, which the worker probe compares with the configured one.
FAUST_FETCH_WAIT_MS = 1500
_MESSAGES = 25
_GAP_S = 0.137  # not a divisor of the waits, so sends fall at every point of a waiting fetch
_READY_TIMEOUT_S = 60.0
_RECEIVE_TIMEOUT_S = 30.0
_WARMUP = b"warmup"


def _create_topic(bootstrap: str, name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-fetch-probe")
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


async def _send_timestamps(producer: AIOKafkaProducer, topic: str) -> None:
    """Send _MESSAGES messages _GAP_S apart, each carrying its send time in seconds."""
    for _ in range(_MESSAGES):
        await producer.send_and_wait(topic, str(time.time()).encode())
        await asyncio.sleep(_GAP_S)


def _delay_ms(value: bytes | None) -> float:
    return (time.time() - float(value or b"0")) * 1000


def _summary(fetch_max_wait_ms: int, delays_ms: list[float]) -> dict[str, float]:
    return {
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "p50_ms": round(percentile(delays_ms, 0.5), 1),
        "max_ms": round(max(delays_ms), 1),
    }


async def _probe_one(bootstrap: str, fetch_max_wait_ms: int, run_id: str) -> dict[str, float]:
    topic = f"bench-{run_id}-fetch-probe-{fetch_max_wait_ms}-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic)
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
                delays_ms.append(_delay_ms(message.value))
                if len(delays_ms) >= _MESSAGES:
                    return

        receiver = asyncio.create_task(receive())
        await _send_timestamps(producer, topic)
        await asyncio.wait_for(receiver, timeout=_RECEIVE_TIMEOUT_S)
    finally:
        await consumer.stop()
        await producer.stop()
    return _summary(fetch_max_wait_ms, delays_ms)


def probe_fetch_delay(bootstrap: str, run_id: str) -> list[dict[str, float]]:
    """Return the median and maximum delivery delay for each fetch wait in FETCH_WAITS_MS.

    The probe topics' names contain ``run_id``, so the run's cleanup deletes them.
    """
    return [asyncio.run(_probe_one(bootstrap, wait_ms, run_id)) for wait_ms in FETCH_WAITS_MS]


async def _wait_assigned(producer: AIOKafkaProducer, topic: str, warmed_up: asyncio.Event) -> None:
    """Send warm-up messages until the agent has received one, so its consumer has joined the group."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not warmed_up.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {_READY_TIMEOUT_S:.0f} s waiting for the probe agent to receive a message "
                f"from {topic}; check the broker log"
            )
        await producer.send_and_wait(topic, _WARMUP)
        try:
            await asyncio.wait_for(warmed_up.wait(), timeout=2.0)
        except asyncio.TimeoutError:
            pass


async def _probe_worker_one(base: Settings, fetch_max_wait_ms: int, run_id: str) -> dict[str, float]:
    bootstrap = base.require_kafka()
    topic_name = f"bench-{run_id}-worker-fetch-probe-{fetch_max_wait_ms}-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic_name)
    delays_ms: list[float] = []
    warmed_up = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="roitrack-fetch-probe-") as data_dir:
        settings = base.model_copy(update={
            "app_id": topic_name, "data_dir": data_dir, "consumer_fetch_max_wait_ms": fetch_max_wait_ms,
        })
        app = create_faust_app(settings)
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

        @app.agent(topic, name="bench.fetch_probe", concurrency=1)
        async def receive(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                if value == _WARMUP:
                    warmed_up.set()
                elif len(delays_ms) < _MESSAGES:
                    delays_ms.append(_delay_ms(value))

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await app.start()
        await producer.start()
        try:
            await _wait_assigned(producer, topic_name, warmed_up)
            await asyncio.sleep(1.0)  # let the consumer reach a waiting fetch
            await _send_timestamps(producer, topic_name)
            deadline = time.monotonic() + _RECEIVE_TIMEOUT_S
            while len(delays_ms) < _MESSAGES and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()
            await app.stop()
    if len(delays_ms) < _MESSAGES:
        raise TimeoutError(
            f"timed out after {_RECEIVE_TIMEOUT_S:.0f} s: the probe agent received {len(delays_ms)} of "
            f"{_MESSAGES} messages from {topic_name}"
        )
    return _summary(fetch_max_wait_ms, delays_ms)


def probe_worker_delivery(base: Settings, run_id: str) -> list[dict[str, float]]:
    """Return the median and maximum delivery delay to a Faust agent of an app built like the worker's.

    It measures Faust's fixed 1500 ms and ``base.consumer_fetch_max_wait_ms``. The
    topics' names contain ``run_id``, so the run's cleanup deletes them.
    """
    waits = sorted({FAUST_FETCH_WAIT_MS, base.consumer_fetch_max_wait_ms}, reverse=True)
    return [asyncio.run(_probe_worker_one(base, wait_ms, run_id)) for wait_ms in waits]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fetch_probe",
        description="Measure the delay from producing a message to its receipt by a consumer whose fetch is "
                    "waiting, with a bare aiokafka consumer and with the worker's Faust consumer.",
    )
    parser.add_argument("--kafka-bootstrap", default="",
                        help="PLAINTEXT brokers to probe, host:port; the probe topics are deleted at the end "
                             "(default: start a tansu broker for the probe)")
    args = parser.parse_args(argv)

    run_id = time.strftime("%H%M%S") + uuid.uuid4().hex[:4]
    broker: EmbeddedBroker | None = None
    bootstrap = args.kafka_bootstrap
    if not bootstrap:
        broker = EmbeddedBroker()
        bootstrap = broker.start()

    try:
        # The ROITRACK_* variables apply, so the worker probe uses the configured fetch wait. A group
        # join on tansu takes about half the session timeout, so it is short here, as in `python -m bench`.
        base = load_settings(kafka_bootstrap=bootstrap, consumer_session_timeout_s=6.0, consumer_heartbeat_s=1.0)
        try:
            results: dict[str, Any] = {
                "kafka_bootstrap": bootstrap,
                "bare_consumer": probe_fetch_delay(bootstrap, run_id),
                "worker_consumer": probe_worker_delivery(base, run_id),
            }
        finally:
            if broker is None:
                delete_topics(base, run_id)
    finally:
        if broker is not None:
            broker.stop()

    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
