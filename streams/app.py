"""The Faust application: topics, agents and timers, built from the settings.

The agents stay thin. They take batches of raw messages with
``stream.take_events``, hand them to the processors in
``streams.attribution`` and ``streams.roi_agent``, and retry a batch when
Redis or the broker is unreachable, without acknowledging it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import faust
import orjson
from faust.types import TP, EventT
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from roitrack.connections import faust_broker_credentials
from roitrack.embedded import redacted_url
from roitrack.settings import Settings
from streams.attribution import AttributionProcessor
from streams.dashboard import register_dashboard
from streams.kafka_transport import Transport
from streams.metrics import WorkerMetrics
from streams.records import Outgoing, Record
from streams.reread import read_offset_ranges
from streams.roi_agent import RoiProcessor
from streams.state import Keys, StateStore, connect

log = logging.getLogger(__name__)

#: Errors that mean Redis or the broker is unreachable; they are logged as warnings.
#: Any other error is logged with its traceback. Both retry the batch.
RETRIABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    asyncio.TimeoutError,
)
_RETRY_MAX_S = 30.0


def faust_data_dir(settings: Settings) -> Path:
    """Return Faust's directory for this app; create_faust_app creates its parent."""
    parent = Path(settings.data_dir) if settings.data_dir else Path(tempfile.gettempdir()) / "roitrack"
    return parent / f"{settings.app_id}-data"


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings that roitrack sets; see docs/architecture.md for the reasons."""
    return {
        "broker": f"kafka://{settings.require_kafka()}",
        "broker_credentials": faust_broker_credentials(settings),
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.person_partitions,
        # roitrack creates its topics with `roitrack topics create`; it uses no
        # Faust tables, so there are no changelog topics to declare.
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        # faust-streaming 0.15 assigns co-partitioned topics together only when
        # standby replicas are above 0 or the app has tables; roitrack has none.
        "table_standby_replicas": 1,
        "consumer_auto_offset_reset": "earliest",
        # At shutdown, wait for the batch in hand: take_events acknowledges a
        # batch even when its handler is cancelled, so an interrupted batch
        # would be committed unprocessed. See _consume for a batch that cannot
        # finish because Redis is down.
        "stream_wait_empty": True,
        "broker_session_timeout": settings.consumer_session_timeout_s,
        "broker_heartbeat_interval": settings.consumer_heartbeat_s,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "datadir": str(faust_data_dir(settings)),
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
        "web_bind": settings.web_bind,
    }


def create_faust_app(settings: Settings, **overrides: Any) -> faust.App:
    """Create the Faust app from ``faust_config`` and ``overrides``, with roitrack's consumer transport.

    The transport applies ``ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS``, which Faust has
    no setting for. Faust creates its own transport only on first use, which comes
    later, so its consumer and conductor use this one. The producer keeps Faust's.
    """
    faust_data_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **{**faust_config(settings), **overrides})
    app.transport = Transport(
        app.conf.broker_consumer, app, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms
    )
    return app


def _records(events: Sequence[EventT[bytes]]) -> list[Record]:
    records = []
    for event in events:
        message = event.message
        records.append(Record(message.topic, message.partition, message.offset, message.key, message.value))
    return records


class Pipeline:
    """The Faust app plus the processors and clients its agents share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_faust_app(settings)
        self.metrics = WorkerMetrics()
        self.redis = connect(settings)
        self.store = StateStore(self.redis, Keys(settings.redis_namespace), self.metrics)
        # Per topic partition: the highest offset handed to an agent, and the
        # offset ranges to read again because Redis lost their writes (see rewind).
        self._last_offset: dict[tuple[str, int], int] = {}
        self._rereads: dict[tuple[str, int], tuple[int, int]] = {}
        self.attribution = AttributionProcessor(
            settings, self.store, self.send, self.end_offset, self.rewind, self.fetched_end_offset,
        )
        self.roi = RoiProcessor(settings, self.store, self.send, self.rewind)
        self.person_topics = self.app.topic(
            settings.topic_touchpoints, settings.topic_conversions, key_type=bytes, value_type=bytes
        )
        self.campaign_topics = self.app.topic(
            settings.topic_credits, settings.topic_campaigns, settings.topic_spend, key_type=bytes, value_type=bytes
        )
        self._register()
        if settings.web_enabled:
            from streams.web import register_api

            register_api(self)
        register_dashboard(self)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Produce messages and wait until the broker acknowledged all of them."""
        if not messages:
            return
        producer = self.app.producer
        futures = []
        for message in messages:
            futures.append(
                await producer.send(
                    message.topic, message.key.encode(), orjson.dumps(message.value),
                    partition=message.partition, timestamp=None, headers=None,
                )
            )
        await asyncio.gather(*futures)
        self._count_sent(messages)

    def _count_sent(self, messages: Sequence[Outgoing]) -> None:
        sent: dict[str, int] = {}
        dead: dict[tuple[str, str], int] = {}
        progress = 0
        for message in messages:
            if message.partition is not None:  # a progress report, see streams.progress
                progress += 1
                continue
            sent[message.topic] = sent.get(message.topic, 0) + 1
            if message.topic == self.settings.topic_dead_letters:
                label = (str(message.value.get("reason")), str(message.value.get("source_topic")))
                dead[label] = dead.get(label, 0) + 1
        if progress:
            self.metrics.progress_messages.labels("out").inc(progress)
        for topic, count in sent.items():
            self.metrics.events_out.labels(topic).inc(count)
        for (reason, source_topic), count in dead.items():
            self.metrics.dead_letters.labels(reason, source_topic).inc(count)

    def applied_offset(self, topic: str, partition: int) -> int | None:
        """Return the last offset of a partition applied to Redis, -1 for none, or None when not loaded."""
        settings = self.settings
        if topic in {settings.topic_touchpoints, settings.topic_conversions}:
            person = self.attribution.partitions.get(partition)
            return None if person is None else person.offsets.get(topic, -1)
        campaign = self.roi.partitions.get(partition)
        return None if campaign is None else campaign.offsets.get(topic, -1)

    def fetched_end_offset(self, topic: str, partition: int) -> int | None:
        """Return the high watermark of the consumer's latest fetch of one partition, or None before any fetch."""
        try:
            fetched = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # noqa: BLE001  # not fetched yet, or revoked
            return None
        return None if fetched is None else int(fetched)

    async def end_offset(self, topic: str, partition: int) -> int | None:
        """Return the end offset of one partition of an input topic, or None when unknown.

        This is the larger of the offset the broker returns for ListOffsets and
        the high watermark of the consumer's latest fetch. Apache Kafka returns
        the log end offset. Some Kafka-protocol brokers (tansu 0.x) return the
        base offset of the last record batch plus one, which is short by the
        rest of that batch. The fetch high watermark covers every batch
        fetched so far, and ListOffsets covers batches produced since.
        """
        tp = TP(topic, partition)
        consumer = self.app.consumer
        try:
            offsets = await consumer.highwaters(tp)
        except Exception as exc:  # noqa: BLE001  # any failure just means "unknown": the conversion keeps waiting
            log.warning("cannot read the end offset of %s-%d: %r", tp.topic, partition, exc)
            return None
        listed = offsets.get(tp)
        if listed is None:
            return None
        try:
            fetched = consumer.highwater(tp)
        except Exception:  # noqa: BLE001  # not fetched yet, or revoked: ListOffsets alone
            fetched = None
        return max(int(listed), int(fetched or 0))

    async def rewind(self, partition: int, targets: dict[str, int]) -> None:
        """Schedule the messages from each target offset up to the last one handed out to be read again.

        The Faust consumer goes on from where it is: seeking it would race with
        its fetch loop, which drops records below the highest offset it has
        delivered. The agent instead reads the range with a consumer of its own
        right after the current batch (_read_again), before the next batch.
        """
        for topic, offset in sorted(targets.items()):
            position = (topic, partition)
            end = self._last_offset.get(position)
            if end is None or end < offset:
                continue
            known = self._rereads.get(position)
            start = offset if known is None else min(offset, known[0])
            self._rereads[position] = (start, end if known is None else max(end, known[1]))
            log.warning("will read %s-%d again from offset %d to %d", topic, partition, start, end)

    async def _read_again(self, name: str, topics: set[str], handle: Callable[[Sequence[Record]], Awaitable[None]]) -> None:
        """Apply the scheduled ranges of this agent's topics, in offset order, until none is left."""
        while True:
            due = {position: span for position, span in self._rereads.items() if position[0] in topics}
            if not due:
                return
            for position in due:
                del self._rereads[position]
            try:
                records = await read_offset_ranges(self.settings, due)
            except RETRIABLE_ERRORS as exc:
                for position, span in due.items():
                    known = self._rereads.get(position, span)
                    self._rereads[position] = (min(span[0], known[0]), max(span[1], known[1]))
                log.warning("%s: reading messages again failed: %r; retrying in 1 s", name, exc)
                await asyncio.sleep(1.0)
                continue
            log.warning(
                "%s: read %d message(s) again from %s", name, len(records),
                ", ".join(f"{topic}-{partition}@{start}..{end}" for (topic, partition), (start, end) in sorted(due.items())),
            )
            if records:
                await self._handle_until_done(name, records, handle)

    async def _consume(
        self, name: str, stream: faust.StreamT[bytes], handle: Callable[[Sequence[Record]], Awaitable[None]],
        topics: set[str],
    ) -> None:
        settings = self.settings
        last_offset = self._last_offset
        # take_events exists on faust-streaming's Stream but not on its StreamT protocol.
        take_events = stream.take_events  # type: ignore[attr-defined]
        async for events in take_events(settings.batch_max_events, within=settings.batch_within_s):
            records = _records(events)
            for record in records:
                last_offset[(record.topic, record.partition)] = record.offset
            await self._handle_until_done(name, records, handle)
            if self._rereads:
                await self._read_again(name, topics, handle)

    async def _handle_until_done(
        self, name: str, records: Sequence[Record], handle: Callable[[Sequence[Record]], Awaitable[None]]
    ) -> None:
        settings = self.settings
        delay_s = 0.5
        while True:
            started_s = time.perf_counter()
            try:
                await handle(records)
                self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started_s)
                return
            except RETRIABLE_ERRORS as exc:
                self.metrics.batch_failures.labels(name, "outage").inc()
                log.warning(
                    "%s: batch of %d records failed: %r; retrying in %.1f s "
                    "(check that Redis at %s and the brokers are reachable)",
                    name, len(records), exc, delay_s, redacted_url(settings.redis_url),
                    extra={"agent": name, "records": len(records), "retry_in_s": delay_s},
                )
            except Exception:
                self.metrics.batch_failures.labels(name, "unexpected").inc()
                # Not an outage: most likely a bug. Skipping the batch would lose it
                # (its offsets would be passed), so it is retried until fixed.
                log.exception(
                    "%s: batch of %d records failed unexpectedly; retrying in %.1f s. "
                    "Report this with the traceback; the partition does not advance until it succeeds",
                    name, len(records), delay_s,
                    extra={"agent": name, "records": len(records), "retry_in_s": delay_s},
                )
            if self.app.should_stop:
                self._exit_without_commit(name, len(records))
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)

    def _exit_without_commit(self, name: str, count: int) -> None:
        """Leave the process while a batch is still failing and the worker is stopping.

        Faust waits at shutdown until the batch in hand is acknowledged, which
        never happens while Redis is down, and faust-streaming's take_events
        acknowledges a batch whose handler is cancelled. Leaving the process
        without a commit is the only way out that keeps the batch: Kafka
        delivers it again after the restart, like after a crash.
        """
        log.error(
            "%s: stopping with a batch of %d records that could not be applied; exiting without "
            "committing it, so it is processed again after the restart",
            name, count,
        )
        logging.shutdown()
        os._exit(0)

    def _register(self) -> None:
        app = self.app
        settings = self.settings

        @app.agent(self.person_topics, name="roitrack.attribute", concurrency=1)
        async def attribute(stream: faust.StreamT[bytes]) -> None:
            await self._consume("attribute", stream, self.attribution.process,
                                {settings.topic_touchpoints, settings.topic_conversions})

        @app.agent(self.campaign_topics, name="roitrack.roi", concurrency=1)
        async def aggregate(stream: faust.StreamT[bytes]) -> None:
            await self._consume("roi", stream, self.roi.process,
                                {settings.topic_credits, settings.topic_campaigns, settings.topic_spend})

        @app.timer(min(0.5, max(0.05, settings.conversion_settle_s / 4)), name="roitrack.release")  # type: ignore[untyped-decorator]  # faust's timer decorator is untyped
        async def release() -> None:
            await self._guarded("release", self.attribution.release_due)

        # The timer ticks four times per interval, so a throttled campaign goes out at
        # most a quarter interval late. One tick per interval could hold it almost two.
        @app.timer(max(0.01, settings.roi_update_interval_s / 4), name="roitrack.emit")  # type: ignore[untyped-decorator]  # faust's timer decorator is untyped
        async def emit() -> None:
            await self._guarded("emit", self.roi.emit_due)

        # Faust sends these signals as handler(sender, partitions, signal=...).
        async def on_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
            self._forget(set(args[0]) if args else set())

        async def on_assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
            assigned = args[0] if args else set()
            log.info(
                "partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned),
                extra={"assigned_partitions": len(assigned)},
            )
            await self._load(assigned)

        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode types the handler more narrowly than it calls it
        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]  # mode types the handler more narrowly than it calls it

    async def _load(self, assigned: set[Any]) -> None:
        """Load assigned partitions from Redis now, so their pending conversions are
        released and their campaigns published without waiting for a new message."""
        settings = self.settings
        person = sorted({tp.partition for tp in assigned if tp.topic in {settings.topic_touchpoints, settings.topic_conversions}})
        campaign = sorted({tp.partition for tp in assigned if tp.topic in {settings.topic_credits, settings.topic_campaigns, settings.topic_spend}})
        try:
            for partition in person:
                await self.attribution.load(partition)
            for partition in campaign:
                await self.roi.load(partition)
        except RETRIABLE_ERRORS as exc:
            # The first batch of each partition loads it instead.
            log.warning("cannot load assigned partitions from Redis (%s): %r", redacted_url(settings.redis_url), exc)

    def _forget(self, revoked: set[Any]) -> None:
        settings = self.settings
        for tp in revoked:
            self._rereads.pop((tp.topic, tp.partition), None)
            self._last_offset.pop((tp.topic, tp.partition), None)
        person = [tp.partition for tp in revoked if tp.topic in {settings.topic_touchpoints, settings.topic_conversions}]
        campaign = [tp.partition for tp in revoked if tp.topic in {settings.topic_credits, settings.topic_campaigns, settings.topic_spend}]
        self.attribution.forget(sorted(set(person)))
        self.roi.forget(sorted(set(campaign)))
        if revoked:
            log.info("partitions revoked: person=%s campaign=%s", sorted(set(person)), sorted(set(campaign)))

    async def _guarded(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except RETRIABLE_ERRORS as exc:
            log.warning("%s timer failed: %r; it runs again on the next tick", name, exc)


def create_pipeline(settings: Settings) -> Pipeline:
    return Pipeline(settings)
