"""Validate collected events and produce them to Kafka, shared by every endpoint.

An event is validated with ``schemas.decode.validate_event``, dropped when its
consent is false, rejected when it is a person event dated more than
``ROITRACK_MAX_FUTURE_SKEW_S`` ahead of the collector clock, reported as a
duplicate when this process already stored its id, and otherwise passed
through ``schemas.privacy.protect`` and produced to its topic. A rejected event
goes to the dead-letter topic without its personal fields. Every produced
message is awaited until the broker acknowledges it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiokafka.errors import KafkaError

from roitrack.collector.packer import Packer
from roitrack.settings import Settings
from roitrack.topics import input_topic
from schemas.common import MAX_ID_LENGTH, Envelope, StrictModel, epoch_ms
from schemas.decode import Rejected, dumps_or_repr, future_time_error, future_time_limit_ms, validate_event
from schemas.events import (
    CAMPAIGN_TYPES,
    Campaign,
    Deal,
    FollowerSnapshot,
    Impressions,
    Purchase,
    Spend,
)
from schemas.outputs import COLLECTOR_SOURCE, FieldError
from schemas.privacy import PERSONAL_FIELDS, protect
from streams.records import Record, dead_letter

log = logging.getLogger(__name__)

Status = Literal["accepted", "duplicate", "rejected", "dropped"]

#: Event ids remembered per collector process to report repeats as duplicates.
RECENT_IDS_CAPACITY = 100_000
_REDACTED = "[redacted]"
_WARNING_INTERVAL_S = 10.0


class ProduceError(RuntimeError):
    """The broker did not acknowledge every message of a request."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one event of a request."""

    index: int | None
    event_id: str | None
    status: Status
    errors: tuple[FieldError, ...] = ()
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "status": self.status,
            "errors": [error.model_dump() for error in self.errors],
            "reason": self.reason,
        }


class RecentIds:
    """A bounded set of ids that evicts the least recently seen one first."""

    def __init__(self, capacity: int = RECENT_IDS_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, event_key: str) -> bool:
        """Return True when the id is stored, and mark it as recently seen."""
        if event_key not in self._ids:
            return False
        self._ids.move_to_end(event_key)
        return True

    def add(self, event_key: str) -> None:
        self._ids[event_key] = None
        self._ids.move_to_end(event_key)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


@dataclass
class CollectorStats:
    """In-memory counters per endpoint and status, for metrics."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, endpoint: str, status: str, count: int = 1) -> None:
        if count:
            self.counts[(endpoint, status)] += count

    def get(self, endpoint: str, status: str) -> int:
        return self.counts[(endpoint, status)]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Return the counters nested as ``{endpoint: {status: count}}``."""
        nested: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in sorted(self.counts.items()):
            nested.setdefault(endpoint, {})[status] = count
        return nested


class RateLimitedWarning:
    """A warning that is logged at most once per interval, with the count of repeats left out."""

    def __init__(self, logger: logging.Logger, interval_s: float = _WARNING_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last_s = -interval_s
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now_s = time.monotonic()
        if now_s - self._last_s < self._interval_s:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._logger.warning(message + suffix, *args)
        self._last_s = now_s
        self._suppressed = 0


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    key: bytes
    value: bytes
    dedup_key: str | None
    #: True for events of the worker's input topics. Dead letters go out one per message.
    packable: bool
    #: A deal purchase, which is sent without waiting for more events (roitrack.collector.packer).
    urgent: bool = False


def event_id_of(event: StrictModel) -> str:
    """Return the id a client uses for the event: event_id, or the id of a definition or platform report."""
    if isinstance(event, Envelope):
        return event.event_id
    if isinstance(event, Spend):
        return event.spend_id
    if isinstance(event, Campaign):
        return event.campaign_id
    if isinstance(event, Deal):
        return event.deal_id
    if isinstance(event, Impressions):
        return event.impressions_id
    if isinstance(event, FollowerSnapshot):
        return event.snapshot_id
    raise TypeError(f"unsupported event model {type(event).__name__}")


def dedup_key_of(event: StrictModel) -> str | None:
    """Return the key that marks a repeat of the event, or None for a campaign or deal definition.

    A definition sent again is an update, so it is never a duplicate.
    """
    if isinstance(event, Envelope):
        return f"event:{event.event_id}"
    if isinstance(event, Spend):
        return f"spend:{event.spend_id}"
    if isinstance(event, Impressions):
        return f"impressions:{event.impressions_id}"
    if isinstance(event, FollowerSnapshot):
        return f"snapshot:{event.snapshot_id}"
    return None


def route_event(settings: Settings, event: StrictModel) -> tuple[str, str]:
    """Return the topic and the key (person or campaign id) of a valid event."""
    event_type = getattr(event, "type")
    topic = input_topic(settings, event_type)
    if topic is not None:
        if isinstance(event, Envelope) and event_type not in CAMPAIGN_TYPES:
            return topic, event.person_id
        if isinstance(event, (Campaign, Deal, Spend, Impressions, FollowerSnapshot)):
            return topic, event.campaign_id
    raise ValueError(f"no topic for event type {event_type!r}; add it to the routing in roitrack.collector.ingest")


def _personal_values(item: object) -> list[str]:
    if not isinstance(item, dict):
        return []
    values = []
    for name in PERSONAL_FIELDS:
        value = item.get(name)
        if value is not None and value != "":
            values.append(value if isinstance(value, str) else dumps_or_repr(value).decode(errors="replace"))
    return values


def _redact(text: str | None, secrets: Sequence[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


def scrub_errors(errors: Sequence[FieldError], item: object) -> tuple[FieldError, ...]:
    """Remove personal data from field errors before they are stored or returned.

    Errors on a personal field lose their value, and the raw personal values are
    cut out of every other value and reason. An error on the whole event loses
    its value too, because that value previews the event with its personal fields.
    """
    secrets = _personal_values(item)
    scrubbed = []
    for error in errors:
        root = error.field.split(".", 1)[0]
        value = None if root in PERSONAL_FIELDS or root == "(event)" else _redact(error.value, secrets)
        reason = _redact(error.reason, secrets) or ""
        scrubbed.append(FieldError(field=error.field, value=value, reason=reason))
    return tuple(scrubbed)


def scrubbed_payload(item: object) -> bytes:
    """Serialize a rejected item for its dead letter, without the personal fields of an object."""
    if isinstance(item, dict):
        item = {name: value for name, value in item.items() if name not in PERSONAL_FIELDS}
    return dumps_or_repr(item)


def _claimed_id(item: object) -> str | None:
    if isinstance(item, dict):
        for name in ("event_id", "spend_id", "campaign_id"):
            value = item.get(name)
            if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
                return value
    return None


def _dead_letter_key(item: object) -> bytes:
    if isinstance(item, dict):
        for name in ("user_id", "anonymous_id", "campaign_id"):
            value = item.get(name)
            if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
                return value.encode()
    return COLLECTOR_SOURCE.encode()


class Ingestor:
    """Validates, filters and produces the events of one request."""

    def __init__(self, settings: Settings, packer: Packer, stats: CollectorStats, recent: RecentIds) -> None:
        self.settings = settings
        self.packer = packer
        self.stats = stats
        self.recent = recent
        self.produce_warning = RateLimitedWarning(log)

    async def ingest(self, endpoint: str, items: Sequence[object], *, indexed: bool = True) -> list[Outcome]:
        """Process the items of one request and return one outcome per item, in order.

        Raises ``ProduceError`` when the broker did not acknowledge every message.
        Events it did acknowledge are remembered, so a retry reports them as duplicates.
        """
        outcomes: list[Outcome] = []
        messages: list[_Message] = []
        batch_keys: set[str] = set()
        future_limit_ms = future_time_limit_ms(int(time.time() * 1000), self.settings.max_future_skew_s)
        for position, item in enumerate(items):
            index = position if indexed else None
            outcome, message = self._process(endpoint, index, item, batch_keys, future_limit_ms)
            outcomes.append(outcome)
            if message is not None:
                messages.append(message)

        await self._produce(endpoint, messages)
        for outcome in outcomes:
            self.stats.add(endpoint, outcome.status)
        return outcomes

    def _process(
        self, endpoint: str, index: int | None, item: object, batch_keys: set[str], future_limit_ms: int
    ) -> tuple[Outcome, _Message | None]:
        result = validate_event(item, index, b"")
        if isinstance(result, Rejected):
            errors = scrub_errors(result.errors, item)
            log.debug("collector %s: event %s rejected (%s)", endpoint, index, result.reason)
            return Outcome(index, _claimed_id(item), "rejected", errors, result.reason), self._dead_letter(
                endpoint, index, item, result.reason, errors
            )

        event_id = event_id_of(result)
        if isinstance(result, Envelope) and result.consent is False:
            log.debug("collector %s: event %s dropped, consent is false", endpoint, event_id)
            return Outcome(index, event_id, "dropped", reason="consent is false"), None

        # The worker would reject a person event dated after the limit, so the response reports it now.
        if isinstance(result, Envelope) and epoch_ms(result.event_time) > future_limit_ms:
            error = future_time_error(result.event_time, self.settings.max_future_skew_s, "collector")
            log.debug("collector %s: event %s rejected, event_time is ahead of the collector clock", endpoint, event_id)
            return Outcome(index, event_id, "rejected", (error,), "invalid"), self._dead_letter(
                endpoint, index, item, "invalid", (error,)
            )

        dedup_key = dedup_key_of(result)
        if dedup_key is not None and (dedup_key in batch_keys or self.recent.seen(dedup_key)):
            log.debug("collector %s: event %s is a duplicate", endpoint, event_id)
            return Outcome(index, event_id, "duplicate", reason="event id already accepted"), None
        if dedup_key is not None:
            batch_keys.add(dedup_key)

        if isinstance(result, Envelope):
            result = protect(result, self.settings.pii_salt)
        topic, key = route_event(self.settings, result)
        value = orjson.dumps(result.model_dump(mode="json", exclude_none=True))
        log.debug("collector %s: event %s accepted for %s", endpoint, event_id, topic)
        deal_purchase = isinstance(result, Purchase) and result.deal_id is not None
        message = _Message(topic, key.encode(), value, dedup_key, packable=True, urgent=deal_purchase)
        return Outcome(index, event_id, "accepted"), message

    def _dead_letter(
        self, endpoint: str, index: int | None, item: object, reason: str, errors: Sequence[FieldError]
    ) -> _Message:
        record = Record(topic=COLLECTOR_SOURCE, partition=-1, offset=-1, key=_dead_letter_key(item), value=None)
        outgoing = dead_letter(
            self.settings.topic_dead_letters,
            record,
            reason,
            errors,
            step=f"collector.{endpoint}",
            max_payload_bytes=self.settings.dead_letter_payload_max_bytes,
            raw=scrubbed_payload(item),
            event_index=index,
        )
        return _Message(
            outgoing.topic, outgoing.key.encode(), orjson.dumps(outgoing.value), None, packable=False
        )

    async def _produce(self, endpoint: str, messages: Sequence[_Message]) -> None:
        """Send the messages in order, packed per partition, and wait until the broker acknowledged each."""
        if not messages:
            return
        pending: list[tuple[_Message, asyncio.Future[Any]]] = []
        failure: BaseException | None = None
        try:
            for message in messages:
                future = await self.packer.send(
                    message.topic, message.key, message.value, packable=message.packable, urgent=message.urgent
                )
                pending.append((message, future))
        except KafkaError as exc:
            failure = exc

        # A pack's future is shared by every request with an event in it, so a request that is
        # cancelled must not cancel it for the others.
        results = await asyncio.gather(*(asyncio.shield(future) for _, future in pending), return_exceptions=True)
        failed = 0 if failure is None else len(messages) - len(pending)
        for (message, _), result in zip(pending, results):
            if isinstance(result, BaseException):
                failed += 1
                failure = failure or result
            elif message.dedup_key is not None:
                self.recent.add(message.dedup_key)

        if failure is not None:
            self.stats.add(endpoint, "failed", failed)
            self.produce_warning.warning(
                "collector %s: the broker did not acknowledge %d of %d messages: %s: %s",
                endpoint, failed, len(messages), type(failure).__name__, failure,
            )
            raise ProduceError(f"{failed} of {len(messages)} messages were not acknowledged") from failure
