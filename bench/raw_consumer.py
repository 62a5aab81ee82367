"""The transport's own rate: read the input topics with a bare aiokafka consumer.

Usage: ``python -m bench.raw_consumer RESULT_FILE EXPECTED_MESSAGES``, with
the ROITRACK_* variables set. The consumer has no group: it is assigned every
partition of the touchpoints and conversions topics, starts at the beginning
and only counts messages (no decoding). Once it has read EXPECTED_MESSAGES it
writes the wall times of its first fetch request and of its last fetch to RESULT_FILE
and exits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.procinfo import write_result
from roitrack.connections import aiokafka_config
from roitrack.settings import load_settings

_TIMEOUT_S = 300.0


async def consume(result_path: Path, expected_messages: int) -> None:
    settings = load_settings()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.require_kafka(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **aiokafka_config(settings),
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in (settings.topic_touchpoints, settings.topic_conversions)
            for partition in range(settings.person_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        messages = 0
        # The clock starts before the first fetch: a single fetch may return most of a small backlog.
        first_s = time.time()
        deadline = time.monotonic() + _TIMEOUT_S
        while messages < expected_messages:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"read {messages} of {expected_messages} messages in {_TIMEOUT_S:.0f} s; "
                    "check that the topics hold the backlog"
                )
            fetched = await consumer.getmany(timeout_ms=200)
            messages += sum(len(records) for records in fetched.values())
        write_result(result_path, {"first_s": first_s, "last_s": time.time(), "messages": messages})
    finally:
        await consumer.stop()


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.raw_consumer RESULT_FILE EXPECTED_MESSAGES")
    asyncio.run(consume(Path(argv[0]), int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
