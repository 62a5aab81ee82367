"""Reading offset ranges of input topics again, with a consumer outside Faust's group.

The agents use this when Redis lost the writes of messages that the Faust
consumer has already delivered (see Pipeline.rewind). The consumer has no
group, commits nothing, and stops at the end of each range.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from roitrack.connections import aiokafka_config
from roitrack.settings import Settings
from streams.records import Record

log = logging.getLogger(__name__)

#: Seconds without a new record, while a range is unfinished, before the read fails.
READ_IDLE_TIMEOUT_S = 30.0


async def read_offset_ranges(settings: Settings, ranges: dict[tuple[str, int], tuple[int, int]]) -> list[Record]:
    """Return the records of each (topic, partition) from the first to the last offset of its range, inclusive.

    Records come per partition in offset order. Raises ConnectionError when the
    broker delivers nothing for READ_IDLE_TIMEOUT_S while a range is unfinished,
    so the caller retries like any broker outage.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.require_kafka().split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **aiokafka_config(settings),
    )
    await consumer.start()
    try:
        partitions = {TopicPartition(topic, partition): span for (topic, partition), span in ranges.items()}
        consumer.assign(list(partitions))
        for tp, (start, _) in partitions.items():
            consumer.seek(tp, start)
        records: list[Record] = []
        unfinished = set(partitions)
        last_progress_s = time.monotonic()
        while unfinished:
            batches = await consumer.getmany(*unfinished, timeout_ms=500)
            for tp, messages in batches.items():
                _, end = partitions[tp]
                for message in messages:
                    if message.offset <= end:
                        records.append(Record(tp.topic, tp.partition, message.offset, message.key, message.value))
                if messages:
                    last_progress_s = time.monotonic()
                if messages and messages[-1].offset >= end:
                    unfinished.discard(tp)
            for tp in list(unfinished):
                if await consumer.position(tp) > partitions[tp][1]:
                    unfinished.discard(tp)  # the range ends on offsets Kafka skips (markers, compaction)
            if unfinished and time.monotonic() - last_progress_s > READ_IDLE_TIMEOUT_S:
                raise ConnectionError(
                    f"reading {len(unfinished)} partition(s) again timed out: no record for {READ_IDLE_TIMEOUT_S:.0f} s from "
                    + ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(unfinished))
                )
            await asyncio.sleep(0)
        records.sort(key=lambda record: (record.topic, record.partition, record.offset))
        return records
    finally:
        await consumer.stop()
