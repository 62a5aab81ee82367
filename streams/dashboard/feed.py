"""The dashboard's live feed: ROI updates and alerts from Kafka, sent to every open page.

Each worker runs one ``DashboardFeed``. It reads two topics without a consumer
group, so it reads every partition and takes no partition from the agents:
``roi-updates`` from its end, and ``alerts`` from a few messages before its end.
A worker owns only some campaign partitions, and reading the whole output
topic is the simplest way to show every campaign. Once positioned at the end
of ``roi-updates``, the feed reads every campaign's current figures from Redis
(``streams.dashboard.snapshot``), so a page shows all campaigns at once and not
only those updated since it opened. Updates with a sequence at or below the
one it holds for the campaign and window are dropped, as for any consumer.

A page subscribes through server-sent events (``streams.dashboard.views``): it
gets the feed's current state first, then every change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from roitrack.connections import aiokafka_config
from roitrack.roi import window_label
from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL, RoiUpdate
from streams.dashboard.alerts import clean_alert

log = logging.getLogger(__name__)

#: Chart points kept per campaign and window, in the feed and in the page.
MAX_POINTS = 600
#: Alerts kept for pages that open later, and alerts read back per partition at start.
MAX_ALERTS = 100
ALERT_BACKLOG_PER_PARTITION = 20
#: Messages queued for one page. A page that falls this far behind is disconnected;
#: its browser reconnects and starts again from the current state.
MAX_QUEUED_MESSAGES = 2000
#: Maximum open pages per worker. More get 503.
MAX_SUBSCRIBERS = 100
TOPIC_WAIT_S = 10.0
ASSIGNMENT_TIMEOUT_S = 30.0
_RETRY_MAX_S = 30.0
#: Rejected messages logged: the first one, then every this many.
_LOG_EVERY = 100

Snapshot = Callable[[], Awaitable[list[dict[str, Any]]]]


def sse_event(name: str, data: Any) -> bytes:
    """Encode one server-sent event. orjson writes no newlines, so the data fits one line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def chart_point(update: dict[str, Any]) -> list[Any]:
    """Return an update's chart point: [published at (ms), sequence, ROI per model as decimal strings]."""
    emitted_ms = _iso_to_ms(update["emitted_at"])
    return [emitted_ms, update["sequence"], {model: figures["roi"] for model, figures in update["models"].items()}]


def _first_error(exc: ValidationError) -> str:
    """Describe a validation failure in one line: the first field error, and how many there are."""
    errors = exc.errors(include_url=False)
    location = ".".join(str(part) for part in errors[0]["loc"]) or "(message)"
    more = f" ({len(errors)} field errors in all)" if len(errors) > 1 else ""
    return f"{location}: {errors[0]['msg']}{more}"


def _iso_to_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass(eq=False)
class Subscriber:
    """One open page: the server-sent events waiting to be written to it, where None ends the stream."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED_MESSAGES))

    def close(self) -> None:
        """End the stream after dropping what is still queued."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class DashboardFeed:
    """Latest ROI update per campaign and window, recent chart points and alerts (see the module docstring)."""

    def __init__(self, settings: Settings, snapshot: Snapshot) -> None:
        self.settings = settings
        self.snapshot = snapshot
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.points: dict[tuple[str, str], deque[list[Any]]] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.subscribers: set[Subscriber] = set()
        self.ready = False
        self.rejected = 0
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._tasks = [
            asyncio.create_task(
                self._follow(settings.topic_roi_updates, self._on_roi_record, 0, self._load_snapshot),
                name="roitrack.dashboard.roi-updates",
            ),
            asyncio.create_task(
                self._follow(settings.topic_alerts, self._on_alert_record, ALERT_BACKLOG_PER_PARTITION, None),
                name="roitrack.dashboard.alerts",
            ),
        ]
        log.info("dashboard feed started: topics %s and %s", settings.topic_roi_updates, settings.topic_alerts)

    async def stop(self) -> None:
        """Stop reading and end every open stream. Calling it again does nothing."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("dashboard feed stopped; %d page(s) disconnected", len(self.subscribers))
        for subscriber in list(self.subscribers):
            subscriber.close()
        self.subscribers.clear()

    # --- pages --------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        windows = [window_label(window_s) for window_s in self.settings.roi_windows_s] + [window_label(None)]
        return {
            "models": list(ATTRIBUTION_MODELS),
            "default_model": DEFAULT_MODEL,
            "windows": windows,
            "currency": self.settings.reporting_currency,
            "max_points": MAX_POINTS,
        }

    def subscribe(self) -> Subscriber | None:
        """Add a page and queue the current state for it, or return None when MAX_SUBSCRIBERS pages are open."""
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            return None
        subscriber = Subscriber()
        series = [
            {"campaign_id": campaign_id, "window": window, "points": list(points)}
            for (campaign_id, window), points in self.points.items()
        ]
        chunks = [
            sse_event("hello", self.hello()),
            sse_event("history", {"series": series}),
            *(sse_event("roi", update) for update in self.latest.values()),
            sse_event("alerts", list(self.alerts)),
        ]
        if self.ready:
            chunks.append(sse_event("ready", {"campaigns": self.campaign_count()}))
        subscriber.queue.put_nowait(b"".join(chunks))
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def campaign_count(self) -> int:
        return len({campaign_id for campaign_id, _ in self.latest})

    def _broadcast(self, chunk: bytes) -> None:
        for subscriber in list(self.subscribers):
            try:
                subscriber.queue.put_nowait(chunk)
            except asyncio.QueueFull:
                log.warning(
                    "dashboard: a page fell %d messages behind and was disconnected; its browser reconnects",
                    MAX_QUEUED_MESSAGES,
                )
                self.subscribers.discard(subscriber)
                subscriber.close()

    # --- state --------------------------------------------------------------

    def apply_roi(self, value: Any) -> bool:
        """Apply an ROI update unless it is invalid or not newer than the one held, and return whether it was applied."""
        try:
            update = RoiUpdate.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            self._reject("an ROI update", _first_error(exc))
            return False
        key = (update["campaign_id"], update["window"])
        known = self.latest.get(key)
        if known is not None and update["sequence"] <= known["sequence"]:
            return False
        self.latest[key] = update
        points = self.points.get(key)
        if points is None:
            points = self.points[key] = deque(maxlen=MAX_POINTS)
        points.append(chart_point(update))
        self._broadcast(sse_event("roi", update))
        return True

    def apply_alert(self, value: Any, received_ms: int) -> bool:
        alert = clean_alert(value, received_ms)
        if alert is None:
            self._reject("an alert", "not a JSON object")
            return False
        self.alerts.append(alert)
        self._broadcast(sse_event("alert", alert))
        return True

    def _reject(self, kind: str, reason: object) -> None:
        self.rejected += 1
        if self.rejected == 1 or self.rejected % _LOG_EVERY == 0:
            log.warning("dashboard: skipped %s that it cannot show (%d skipped so far): %s", kind, self.rejected, reason)

    async def _load_snapshot(self) -> None:
        try:
            values = await self.snapshot()
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            log.warning("dashboard: cannot read the campaigns from Redis: %r; showing updates as they arrive", exc)
            values = []
        applied = sum(1 for value in values if self.apply_roi(value))
        self.ready = True
        self._broadcast(sse_event("ready", {"campaigns": self.campaign_count()}))
        log.info("dashboard: loaded %d ROI figure(s) of %d campaign(s) from Redis", applied, self.campaign_count())

    def _on_roi_record(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as exc:
            self._reject("an ROI update", exc)
            return
        self.apply_roi(value)

    def _on_alert_record(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as exc:
            self._reject("an alert", exc)
            return
        received_ms = record.timestamp if record.timestamp and record.timestamp > 0 else int(time.time() * 1000)
        self.apply_alert(value, received_ms)

    def _handle(self, topic: str, handle: Callable[[ConsumerRecord[Any, Any]], None],
                record: ConsumerRecord[Any, Any]) -> None:
        """Handle one record; an error skips it, so a bad message is not read again in a loop.

        Restarting the consumer would seek back to the same backlog, and meet the same message.
        """
        try:
            handle(record)
        except Exception as exc:  # noqa: BLE001  # any error in one record must not stop the feed
            self._reject(f"a message of {topic} at partition {record.partition} offset {record.offset}", repr(exc))

    # --- Kafka --------------------------------------------------------------

    def _consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=settings.require_kafka(),
            client_id=f"{settings.app_id}-dashboard",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **aiokafka_config(settings),
        )

    async def _follow(
        self,
        topic: str,
        handle: Callable[[ConsumerRecord[Any, Any]], None],
        backlog: int,
        positioned: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Read ``topic`` until cancelled, starting ``backlog`` messages before the end of each partition.

        ``positioned`` runs once the start offsets are fixed, before the first message is handled.
        A failure restarts the consumer after a growing delay.
        """
        delay_s = 1.0
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                partitions = await self._assign(consumer, topic)
                await self._seek(consumer, partitions, backlog)
                if positioned is not None:
                    await positioned()
                delay_s = 1.0
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for records in batches.values():
                        for record in records:
                            self._handle(topic, handle, record)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                log.warning("dashboard: reading topic %s failed: %r; retrying in %.0f s", topic, exc, delay_s)
            except Exception:
                log.exception("dashboard: reading topic %s failed unexpectedly; retrying in %.0f s", topic, delay_s)
            finally:
                await _stop_quietly(consumer)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)

    async def _assign(self, consumer: AIOKafkaConsumer, topic: str) -> set[TopicPartition]:
        """Wait until ``topic`` exists, then subscribe to all its partitions.

        The check lists all topics first, because a metadata request that names
        a missing topic makes some brokers (tansu among them) create it with
        their default partition count.
        """
        waited = False
        while topic not in await consumer.topics():
            if not waited:
                log.info("dashboard: topic %s does not exist yet; checking every %.0f s", topic, TOPIC_WAIT_S)
                waited = True
            await asyncio.sleep(TOPIC_WAIT_S)
        consumer.subscribe([topic])
        deadline = time.monotonic() + ASSIGNMENT_TIMEOUT_S
        # Without a group, aiokafka assigns every partition on its next metadata update.
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"no partitions of {topic} assigned after {ASSIGNMENT_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        return set(consumer.assignment())

    async def _seek(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], backlog: int) -> None:
        ordered = sorted(partitions)
        if backlog > 0:
            ends = await consumer.end_offsets(ordered)
            begins = await consumer.beginning_offsets(ordered)
            for tp in ordered:
                consumer.seek(tp, max(begins[tp], ends[tp] - backlog))
        else:
            await consumer.seek_to_end(*ordered)
        for tp in ordered:
            # Resolve the position now, so a snapshot taken next is not older than it.
            await consumer.position(tp)


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except (KafkaError, OSError) as exc:
        log.debug("dashboard: stopping a consumer failed: %r", exc)
