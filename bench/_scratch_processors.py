"""Replay the bench workload straight into the two processors, without Faust and Kafka.

Usage: ``python -m bench.processors [--mode single|batched] [--gc-threshold N]``.

It plans the same workload as ``make bench``, builds the Kafka records in
memory, and hands them to ``AttributionProcessor.process`` in batches of the
size the worker's batches had in ``make bench`` (1,580 single-event or 660 batch
messages per call). The
credits it sends go straight to ``RoiProcessor.process``; every other output is
dropped. Redis is real: ``--redis-url``, default the local server, under a
namespace of its own that is deleted at the end. It prints the processors' events
per CPU second, their events per second by the clock (which adds the time they
waited for Redis), the purchases attributed out of all, and the garbage
collections during the replay.

It measures the code this repository owns, quickly and without the noise of a
broker on the same cores, so it suits comparing two versions of a change. The
figures of docs/benchmarks.md come from ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson

from bench.scenarios import CAMPAIGNS_FILE
from bench.services import delete_namespace
from bench.workload import backlog_events, plan_workload
from roitrack.replay import campaign_events
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.records import Outgoing, Record
from streams.roi_agent import RoiProcessor
from streams.state import Keys, StateStore, connect, partition_for_key

PERSON_PARTITIONS = 8
CAMPAIGN_PARTITIONS = 4
#: Records per AttributionProcessor.process call, as the worker's batches had in make bench.
import os; BATCH_RECORDS = {"single": int(os.environ.get("BR","1580")), "batched": int(os.environ.get("BR","660"))}
EVENTS_PER_MESSAGE = 50


def build_records(settings: Settings, mode: str, events: int, seed: int) -> tuple[list[Record], int]:
    """Return the workload as Kafka records of the two input topics, and its number of events."""
    campaigns = [event["campaign_id"] for _, event in campaign_events(CAMPAIGNS_FILE) if event.get("type") == "campaign"]
    workload = plan_workload(events, campaigns, PERSON_PARTITIONS, seed)
    next_offset: dict[tuple[str, int], int] = defaultdict(int)
    records: list[Record] = []

    def add(topic: str, partition: int, key: bytes, value: bytes) -> None:
        records.append(Record(topic, partition, next_offset[(topic, partition)], key, value))
        next_offset[(topic, partition)] += 1

    pending: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    planned = [event for _, event in backlog_events(workload, time.time() - workload.span_s - 600)]
    for event in planned:
        key = event["user_id"].encode()
        topic = settings.topic_conversions if event["type"] == "purchase" else settings.topic_touchpoints
        partition = partition_for_key(key, PERSON_PARTITIONS)
        if mode == "single":
            add(topic, partition, key, orjson.dumps(event))
            continue
        buffer = pending[(topic, partition)]
        buffer.append(event)
        if len(buffer) == EVENTS_PER_MESSAGE:
            add(topic, partition, key, orjson.dumps(buffer))
            buffer.clear()
    for (topic, partition), buffer in pending.items():
        if buffer:
            add(topic, partition, buffer[0]["user_id"].encode(), orjson.dumps(buffer))
    return records, len(planned)


async def replay(settings: Settings, records: Sequence[Record], batch_records: int) -> tuple[float, float, int]:
    """Process the records; return the CPU and clock seconds it took and the conversions attributed."""
    credits: list[Record] = []
    credit_offsets: dict[int, int] = defaultdict(int)

    async def send_attribution_output(messages: Sequence[Outgoing]) -> None:
        for message in messages:
            if message.topic != settings.topic_credits:
                continue
            partition = message.partition
            if partition is None:
                partition = partition_for_key(message.key.encode(), CAMPAIGN_PARTITIONS)
            credits.append(Record(message.topic, partition, credit_offsets[partition], message.key.encode(),
                                  orjson.dumps(message.value)))
            credit_offsets[partition] += 1

    async def drop(messages: Sequence[Outgoing]) -> None:
        """Drop the ROI agent's outputs; the replay measures the work, not the producer."""

    store = StateStore(connect(settings.redis_url), Keys(settings.redis_namespace))
    try:
        attribution = AttributionProcessor(settings, store, send_attribution_output)
        roi = RoiProcessor(settings, store, drop)
        started_cpu_s = time.process_time()
        started_s = time.perf_counter()
        for start in range(0, len(records), batch_records):
            await attribution.process(records[start : start + batch_records])
            if credits:
                await roi.process(list(credits))
                credits.clear()
        cpu_s = time.process_time() - started_cpu_s
        return cpu_s, time.perf_counter() - started_s, attribution.stats["conversions_attributed"]
    finally:
        await store.close()


def _events_in(record: Record) -> int:
    """Count the events of one message: a JSON array of events, or one event."""
    value = orjson.loads(record.value or b"")
    return len(value) if isinstance(value, list) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(BATCH_RECORDS), default="batched",
                        help="one event per message, or 50 per message (default batched)")
    parser.add_argument("--events", type=int, default=60_000, help="events in the workload (default 60000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic workload (default 7)")
    parser.add_argument("--gc-threshold", type=int, default=50_000,
                        help="young-generation threshold of the garbage collector, as the worker sets it; "
                             "0 keeps Python's default (default 50000)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use (default the local server)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    namespace = f"bench-processors-{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate({
        "kafka_bootstrap": "127.0.0.1:1", "redis_url": args.redis_url, "redis_namespace": namespace,
        "person_partitions": PERSON_PARTITIONS, "campaign_partitions": CAMPAIGN_PARTITIONS,
    })
    records, events = build_records(settings, args.mode, args.events, args.seed)
    purchases = sum(_events_in(record) for record in records if record.topic == settings.topic_conversions)
    collections = [0]
    gc.callbacks.append(lambda phase, info: collections.__setitem__(0, collections[0] + (phase == "start")))
    if args.gc_threshold:
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(args.gc_threshold, older, oldest)
    print(f"replaying {events:,} events ({purchases:,} purchases; the workload ends with one closing click per "
          f"person partition) in {len(records):,} messages ({args.mode}) into Redis namespace {namespace}", flush=True)
    try:
        cpu_s, clock_s, attributed = asyncio.run(replay(settings, records, BATCH_RECORDS[args.mode]))
    finally:
        delete_namespace(args.redis_url, namespace)
    print(f"{args.mode}: {events / cpu_s:,.0f} events per CPU second ({cpu_s:.2f} CPU s), "
          f"{events / clock_s:,.0f} by the clock, waits for Redis included ({clock_s:.2f} s), "
          f"{attributed:,} of {purchases:,} purchases attributed, {collections[0]} garbage collections"
          + (f" (young-generation threshold {args.gc_threshold:,})" if args.gc_threshold else ""))


if __name__ == "__main__":
    main()
