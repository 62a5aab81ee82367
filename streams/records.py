"""Plain records passed between the Faust agents and the processors."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable, Sequence

import orjson

from roitrack.attribution import DECIMAL_CONTEXT
from schemas.decode import Rejected
from schemas.outputs import FieldError
from schemas.privacy import PERSONAL_FIELDS


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message as the processors see it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to produce: topic, key and JSON value.

    ``partition`` overrides the key's partition; only progress messages, which go
    to every partition of a topic, set it.
    """

    topic: str
    key: str
    value: dict[str, Any]
    partition: int | None = None


Send = Callable[[Sequence[Outgoing]], Awaitable[None]]
"""Produce messages and return once the broker acknowledged every one."""


def split_by_bytes(records: Sequence[Record], max_bytes: int) -> list[Sequence[Record]]:
    """Split records, in order, into runs whose values add up to at most ``max_bytes``.

    A record larger than ``max_bytes`` forms a run of its own. The processors apply
    each run in one Redis write, so this bounds the size of that write.
    """
    runs: list[Sequence[Record]] = []
    start = size = 0
    for index, record in enumerate(records):
        length = len(record.value) if record.value else 0
        if index > start and size + length > max_bytes:
            runs.append(records[start:index])
            start, size = index, 0
        size += length
    if start < len(records):
        runs.append(records[start:])
    return runs


def decimal_text(value: Decimal) -> str:
    """Format a Decimal as plain text without trailing zeros: 1.500 -> '1.5', 1E+1 -> '10'.

    It normalises under DECIMAL_CONTEXT: the default context's 28 digits would
    round a revenue share of 15 integer and 18 fractional digits.
    """
    text = format(value.normalize(DECIMAL_CONTEXT), "f")
    return text


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_ms(epoch_ms: int) -> str:
    """Format epoch milliseconds from 1970 to 9999 as ISO 8601 UTC with a Z suffix.

    The milliseconds come from integer division. Dividing by 1000 as a float
    instead lost the last millisecond of some times after about 2100 (for
    example 20023714623989 came out as .988), and the worker accepts event
    times up to 3000.
    """
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


#: ``FieldError.field`` of an event or credit rejected because it arrived on
#: another partition than its person or campaign id belongs on.
WRONG_PARTITION_FIELD = "(key)"


def dead_letter(
    topic: str,
    record: Record,
    reason: str,
    errors: Sequence[FieldError],
    step: str,
    max_payload_bytes: int,
    raw: bytes | None = None,
    event_index: int | None = None,
) -> Outgoing:
    """Build the dead letter of a rejected message or event."""
    payload = scrub_personal_data(raw if raw is not None else (record.value or b""))
    errors = [
        FieldError(field=error.field, value=REMOVED, reason=error.reason)
        if error.field.split(".")[0] in PERSONAL_FIELDS and error.value is not None
        else error
        for error in errors
    ]
    truncated = len(payload) > max_payload_bytes
    text = payload[:max_payload_bytes].decode("utf-8", errors="replace")
    value = {
        "type": "dead_letter",
        "reason": reason,
        "step": step,
        "errors": [error.model_dump() for error in errors],
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "event_index": event_index,
        "payload": text,
        "payload_truncated": truncated,
        "rejected_at": utc_now().isoformat().replace("+00:00", "Z"),
    }
    key = record.key.decode("utf-8", errors="replace") if record.key else f"{record.topic}-{record.partition}"
    return Outgoing(topic=topic, key=key, value=value)


REMOVED = "[removed]"
_EMAIL = re.compile(rb"[^\s\"'<>@,;:]+@[^\s\"'<>@,;:]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(rb"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


def _scrub_object(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: (REMOVED if name in PERSONAL_FIELDS and item is not None else _scrub_object(item))
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub_object(item) for item in value]
    return value


def scrub_personal_data(payload: bytes) -> bytes:
    """Remove personal fields from a JSON payload, or e-mail and IPv4 look-alikes from other text."""
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _IPV4.sub(b"[removed]", _EMAIL.sub(b"[removed]", payload))
    if isinstance(parsed, (dict, list)):
        try:
            return orjson.dumps(_scrub_object(parsed))
        except (TypeError, RecursionError):
            # Nested deeper than orjson writes: keep the text, with look-alikes removed.
            return _IPV4.sub(b"[removed]", _EMAIL.sub(b"[removed]", payload))
    return payload


def rejected_dead_letter(
    topic: str, record: Record, rejected: Rejected, step: str, max_payload_bytes: int
) -> Outgoing:
    return dead_letter(
        topic,
        record,
        rejected.reason,
        rejected.errors,
        step,
        max_payload_bytes,
        raw=rejected.raw,
        event_index=rejected.index,
    )


def dumps(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)
