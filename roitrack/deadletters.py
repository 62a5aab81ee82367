"""List the dead-letter topic and redrive dead letters to their source topics.

``read_dead_letters`` reads the whole dead-letter topic without a consumer
group. ``redrive`` re-produces the payload of each matching dead letter, keyed
as the worker expects, so that a fixed worker (or a fixed producer's data)
processes it again. It reads through the consumer group ``<app id>-redrive``
and commits after the broker acknowledged what it produced, so a second run
sends only dead letters that arrived since.

The CLI wires these as ``roitrack deadletters list`` and
``roitrack deadletters redrive``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from roitrack.connections import kafka_python_config
from roitrack.replay import UNROUTABLE_KEY, make_producer, route
from roitrack.settings import Settings
from schemas.outputs import (
    COLLECTOR_SOURCE,
    DEAD_LETTER_REASONS,
    LIST_REASONS,
    UNREADABLE_REASON,
    DeadLetter,
    FieldError,
)
from schemas.privacy import PERSONAL_FIELDS
from streams.records import REMOVED, WRONG_PARTITION_FIELD

log = logging.getLogger(__name__)

#: Outcomes of one dead letter in a redrive. In a dry run, ``redriven``
#: counts the dead letters that would have been produced.
REDRIVEN = "redriven"
SKIPPED_TRUNCATED = "skipped_truncated"
SKIPPED_NOT_JSON = "skipped_not_json"
SKIPPED_UNROUTABLE = "skipped_unroutable"
SKIPPED_UNREADABLE = "skipped_unreadable"
SKIPPED_MISSING_TOPIC = "skipped_missing_topic"


_POLL_TIMEOUT_MS = 200
_PROGRESS_LOG_INTERVAL_S = 10.0
_MAX_SKIP_EXAMPLES = 10
_PREVIEW_CHARS = 60
_ERROR_CHARS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class DeadLettersError(RuntimeError):
    """The dead-letter topic or a target topic cannot be used. The message contains the fix."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead letter with the partition and offset it has in the dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    reason: str
    step: str
    errors: tuple[FieldError, ...]
    source_topic: str
    source_partition: int
    source_offset: int
    event_index: int | None
    payload: str
    payload_truncated: bool
    rejected_at: datetime | None

    def first_error(self) -> str:
        """Return the first field error as ``field=value: reason``, or an empty string."""
        if not self.errors:
            return ""
        error = self.errors[0]
        return f"{error.field}={error.value if error.value is not None else '(none)'}: {error.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode("utf-8", errors="replace") if self.key is not None else None,
            "reason": self.reason,
            "step": self.step,
            "errors": [error.model_dump() for error in self.errors],
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "event_index": self.event_index,
            "payload": self.payload,
            "payload_truncated": self.payload_truncated,
            "rejected_at": _iso(self.rejected_at) if self.rejected_at is not None else None,
        }


def parse_dead_letter(partition: int, offset: int, key: bytes | None, value: bytes | None) -> DeadLetterRecord:
    """Parse one message of the dead-letter topic.

    A value that is not a valid ``DeadLetter`` becomes a record with reason
    ``(unreadable)`` and the raw value as payload, so listings show it and
    ``redrive`` skips it.
    """
    try:
        letter = DeadLetter.model_validate_json(value or b"")
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        location = ".".join(str(part) for part in problem["loc"]) or "(message)"
        return DeadLetterRecord(
            partition=partition,
            offset=offset,
            key=key,
            reason=UNREADABLE_REASON,
            step="",
            errors=(FieldError(field=location, value=None, reason=f"not a dead letter: {problem['msg']}"),),
            source_topic="",
            source_partition=-1,
            source_offset=-1,
            event_index=None,
            payload=(value or b"").decode("utf-8", errors="replace"),
            payload_truncated=False,
            rejected_at=None,
        )
    return DeadLetterRecord(
        partition=partition,
        offset=offset,
        key=key,
        reason=letter.reason,
        step=letter.step,
        errors=tuple(letter.errors),
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        event_index=letter.event_index,
        payload=letter.payload,
        payload_truncated=letter.payload_truncated,
        rejected_at=letter.rejected_at,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def check_reason(reason: str | None, known: Sequence[str]) -> None:
    """Raise ValueError unless ``reason`` is None or one of ``known``.

    A filter with a misspelt reason matches nothing, and a redrive would then
    commit its group past every dead letter it read.
    """
    if reason is not None and reason not in known:
        raise ValueError(f"invalid dead-letter reason {reason!r}, expected one of {', '.join(known)}")


def matches(record: DeadLetterRecord, reason: str | None, source_topic: str | None) -> bool:
    """Return whether a dead letter passes the ``reason`` and ``source_topic`` filters (None passes all)."""
    if reason is not None and record.reason != reason:
        return False
    if source_topic is not None and record.source_topic != source_topic:
        return False
    return True


# --- Kafka access ------------------------------------------------------------


def _consumer(settings: Settings, group_id: str | None) -> Any:
    bootstrap = settings.require_kafka()
    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            client_id="roitrack-deadletters",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A typo in a topic name must not create that topic on brokers that auto-create.
            allow_auto_create_topics=False,
            **kafka_python_config(settings),
        )
    except KafkaError as exc:
        raise DeadLettersError(
            f"connecting to Kafka at {bootstrap} failed: {exc}. Check that the broker runs and "
            "that ROITRACK_KAFKA_BOOTSTRAP points at it."
        ) from exc


def _dead_letter_partitions(settings: Settings, consumer: Any, topics: set[str]) -> list[Any]:
    name = settings.topic_dead_letters
    if name not in topics:
        raise DeadLettersError(
            f"dead-letter topic {name!r} not found on {settings.kafka_bootstrap}. Set "
            "ROITRACK_TOPIC_DEAD_LETTERS to the topic the worker writes to, or create the "
            "topics with `roitrack topics create`."
        )
    partitions = consumer.partitions_for_topic(name) or set()
    return [TopicPartition(name, partition) for partition in sorted(partitions)]


def _read_batches(
    consumer: Any, end_offsets: dict[Any, int], idle_s: float
) -> Iterator[list[Any]]:
    """Yield polled records until every partition reached its end offset from the start of the read.

    A partition's end is the larger of the offset the broker listed and the high
    watermark of the latest fetch: some Kafka-protocol brokers (tansu 0.x) list
    the base offset of the last record batch plus one, short of the batch's
    other records. Stops early, with a warning, when no record arrives for
    ``idle_s`` while a partition is still behind, so a broker that lost data
    cannot hang the read.
    """
    last_record_s = time.monotonic()
    while True:
        for tp in end_offsets:
            end_offsets[tp] = max(end_offsets[tp], consumer.highwater(tp) or 0)
        behind = [tp for tp, end in end_offsets.items() if consumer.position(tp) < end]
        if not behind:
            return
        polled = consumer.poll(timeout_ms=_POLL_TIMEOUT_MS)
        records = [record for tp in sorted(polled) for record in polled[tp]]
        if records:
            last_record_s = time.monotonic()
            yield records
        elif time.monotonic() - last_record_s >= idle_s:
            log.warning(
                "stopped reading dead letters: nothing arrived for %.1f s while partitions %s "
                "were behind their end offsets",
                idle_s, ", ".join(f"{tp.partition}@{consumer.position(tp)}<{end_offsets[tp]}" for tp in behind),
            )
            return


def read_dead_letters(
    settings: Settings,
    *,
    reason: str | None = None,
    source_topic: str | None = None,
    limit: int | None = None,
    idle_s: float = 2.0,
) -> list[DeadLetterRecord]:
    """Read the dead-letter topic from the beginning and return the matching dead letters.

    Reads without a consumer group, so nothing is committed, up to the end
    offsets the broker reports at the start. The result is ordered by
    rejection time, then partition and offset. ``limit`` keeps the newest
    ``limit`` matching dead letters, still oldest first. ``reason`` must be
    one of ``LIST_REASONS`` (ValueError otherwise). ``idle_s`` is how long to
    wait for more records while a partition is still behind its end offset.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}; leave it out to list every dead letter")
    check_reason(reason, LIST_REASONS)
    consumer = _consumer(settings, group_id=None)
    found: list[DeadLetterRecord] = []
    try:
        partitions = _dead_letter_partitions(settings, consumer, consumer.topics())
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end_offsets = consumer.end_offsets(partitions)
        for records in _read_batches(consumer, end_offsets, idle_s):
            for message in records:
                record = parse_dead_letter(message.partition, message.offset, message.key, message.value)
                if matches(record, reason, source_topic):
                    found.append(record)
    except KafkaError as exc:
        raise DeadLettersError(
            f"reading dead-letter topic {settings.topic_dead_letters!r} from "
            f"{settings.kafka_bootstrap} failed: {exc}. Check the broker and run again."
        ) from exc
    finally:
        consumer.close()
    found.sort(key=lambda record: (record.rejected_at or _EPOCH, record.partition, record.offset))
    if limit is not None:
        found = found[-limit:]
    return found


# --- Listing -------------------------------------------------------------------


def _cut(text: str, width: int) -> str:
    flat = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def format_dead_letters(records: Sequence[DeadLetterRecord], as_json: bool) -> str:
    """Render dead letters as a text table, or as JSON lines when ``as_json`` is true.

    The table has one row per dead letter: its partition:offset in the
    dead-letter topic, reason, step, source topic/partition/offset, first
    field error and the start of the payload.
    """
    if as_json:
        return "\n".join(orjson.dumps(record.to_json()).decode() for record in records)
    if not records:
        return "no dead letters found"
    header = ("offset", "reason", "step", "source", "first error", "payload")
    rows = []
    for record in records:
        source = f"{record.source_topic}/{record.source_partition}/{record.source_offset}"
        if record.reason == UNREADABLE_REASON:
            source = "-"
        if record.event_index is not None:
            source += f"[{record.event_index}]"
        payload = record.payload + (" (truncated)" if record.payload_truncated else "")
        rows.append((
            f"{record.partition}:{record.offset}",
            record.reason,
            record.step,
            source,
            _cut(record.first_error(), _ERROR_CHARS),
            _cut(payload, _PREVIEW_CHARS),
        ))
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"{len(records)} dead letter(s)")
    return "\n".join(lines)


# --- Redrive -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedriveTarget:
    """Destination of a dead letter's payload: topic, key and, for keyless sources, the partition."""

    topic: str
    key: bytes | None
    partition: int | None
    value: bytes
    removed_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RedriveSkip:
    """Why a dead letter is not redriven: the outcome counted and a message for the operator."""

    outcome: str
    detail: str


def plan_redrive(
    settings: Settings, record: DeadLetterRecord, to_topic: str | None = None
) -> RedriveTarget | RedriveSkip:
    """Decide where one dead letter's payload goes, or why it cannot be redriven.

    A dead letter from a Kafka topic goes back to that topic (``to_topic``
    overrides it). A payload that is one event object is keyed as the worker
    expects (see ``event_key``), so an event rejected for arriving on the
    wrong partition lands on the right one. Any other payload keeps its
    original key. The worker keys the dead letter of a keyless message
    ``<topic>-<partition>``, so such a payload goes without a key, to the same
    partition when the target is the source topic. A dead letter from the
    collector, or one that ``roitrack replay`` produced under the key
    ``unroutable``, is routed by its event ``type``, like ``roitrack replay``
    routes events. So is an event that the worker rejected for arriving on a
    topic its type does not belong on, unless ``to_topic`` is given.
    """
    where = f"dead letter {record.partition}:{record.offset}"
    if record.reason == UNREADABLE_REASON:
        return RedriveSkip(
            SKIPPED_UNREADABLE,
            f"{where} cannot be read ({record.errors[0].reason}); inspect it with `roitrack deadletters list --json`",
        )
    if record.payload_truncated:
        return RedriveSkip(
            SKIPPED_TRUNCATED,
            f"{where} has a payload cut at ROITRACK_DEAD_LETTER_PAYLOAD_MAX_BYTES="
            f"{settings.dead_letter_payload_max_bytes}; produce the original message from "
            f"{record.source_topic} partition {record.source_partition} offset {record.source_offset} again",
        )
    value, removed = drop_removed_fields(record.payload.encode("utf-8"))

    if record.source_topic == COLLECTOR_SOURCE:
        return _plan_by_type(settings, record, value, removed, to_topic, f"{where} from the collector")
    if record.key == UNROUTABLE_KEY:
        # replay produced the line to the touchpoints topic only because it found no topic for it.
        origin = f"{where}, produced by `roitrack replay` under the key 'unroutable',"
        return _plan_by_type(settings, record, value, removed, to_topic, origin)
    if to_topic is None and record.reason == "unsupported" and any(error.field == "type" for error in record.errors):
        # Its type belongs on another topic, so sending it back to the source topic would fail again.
        return _plan_by_type(settings, record, value, removed, None, f"{where}, an event on the wrong topic,")

    topic = to_topic or record.source_topic
    key = event_key(settings, topic, value)
    if key is not None:
        return RedriveTarget(topic, key, None, value, removed)
    if any(error.field == WRONG_PARTITION_FIELD for error in record.errors):
        return RedriveSkip(
            SKIPPED_UNROUTABLE,
            f"{where} was rejected for its key, and its payload has no user_id, anonymous_id or campaign_id "
            "to key it by, so the worker would reject it again; fix the event and produce it again",
        )
    keyless = record.key is None or record.key == f"{record.source_topic}-{record.source_partition}".encode()
    if keyless:
        partition = record.source_partition if topic == record.source_topic else None
        return RedriveTarget(topic, None, partition, value, removed)
    return RedriveTarget(topic, record.key, None, value, removed)


def _plan_by_type(
    settings: Settings,
    record: DeadLetterRecord,
    value: bytes,
    removed: tuple[str, ...],
    to_topic: str | None,
    origin: str,
) -> RedriveTarget | RedriveSkip:
    """Route a payload by its event ``type``, as ``roitrack replay`` does. ``origin`` starts each skip message."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return RedriveSkip(
            SKIPPED_NOT_JSON,
            f"{origin} has a payload that is not JSON ({_cut(record.payload, 40)!r}), "
            "so it has no type to route by; fix the sender and send the event again",
        )
    routed = route(settings, value, event)
    if not routed.routable:
        return RedriveSkip(
            SKIPPED_UNROUTABLE,
            f"{origin} has no known type with a person or campaign id "
            f"(type={event.get('type') if isinstance(event, dict) else None!r}); fix the event and send it again",
        )
    return RedriveTarget(to_topic or routed.topic, routed.key, None, value, removed)


def event_key(settings: Settings, topic: str, payload: bytes) -> bytes | None:
    """Return the key that the worker expects for a payload that is one event object, or None.

    The attribution agent rejects a person's event, and the ROI agent a
    credit, that arrived on another partition than Kafka's default murmur2
    partitioner picks for its person or campaign id. Credits and social facts
    on the credits topic are keyed by ``campaign_id``. Other events are keyed as
    ``roitrack replay`` keys them: person events by ``user_id``, else
    ``anonymous_id``, and campaign events by ``campaign_id``. None for a
    batch (a JSON array), a payload that is not JSON, or an event without
    such an id.
    """
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    if topic == settings.topic_credits:
        campaign = event.get("campaign_id")
        return campaign.encode() if isinstance(campaign, str) and campaign else None
    routed = route(settings, payload, event)
    return routed.key if routed.routable else None


def drop_removed_fields(payload: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Delete the personal fields that the worker replaced with ``[removed]`` from a JSON payload.

    Returns the payload and the names of the deleted fields. Left in place,
    ``"email": "[removed]"`` or ``"ip": "[removed]"`` would fail validation
    again. The personal fields are optional, so the event stays valid without
    them, but a redriven touchpoint then escapes the bot and IP flood checks.
    A payload that is not JSON, or has nothing to delete, is returned unchanged.
    """
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload, ()
    events = parsed if isinstance(parsed, list) else [parsed]
    removed: set[str] = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        for name in PERSONAL_FIELDS:
            if event.get(name) == REMOVED:
                del event[name]
                removed.add(name)
    if not removed:
        return payload, ()
    return orjson.dumps(parsed), tuple(sorted(removed))


@dataclass
class RedriveReport:
    """Counts of one redrive: dead letters read, produced and skipped, per outcome and target topic."""

    group_id: str
    dry_run: bool
    #: The one topic that every payload went to, or None for each dead letter's own topic.
    to_topic: str | None = None
    read: int = 0
    unmatched: int = 0
    #: Redriven payloads that lost personal fields the worker had replaced with ``[removed]``.
    without_personal_fields: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    skip_examples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def redriven(self) -> int:
        return self.outcomes[REDRIVEN]

    @property
    def skipped(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome != REDRIVEN)

    def count(self, outcome: str, detail: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if detail is not None and len(self.skip_examples) < _MAX_SKIP_EXAMPLES:
            self.skip_examples.append(detail)


def format_redrive_report(report: RedriveReport) -> str:
    """Render a redrive report: a summary line, counts per outcome and target topic, and skip examples."""
    verb = "would send" if report.dry_run else "sent"
    target = f"to topic {report.to_topic}" if report.to_topic is not None else "back to their topics"
    lines = [
        f"{verb} {report.redriven} of {report.read} dead letter(s) read {target} in {report.elapsed_s:.1f} s "
        f"({report.skipped} skipped, {report.unmatched} not matching the filters; "
        f"consumer group {report.group_id})"
    ]
    for outcome, count in sorted(report.outcomes.items()):
        lines.append(f"  {outcome}: {count}")
    for topic, count in sorted(report.by_topic.items()):
        lines.append(f"  to {topic}: {count}")
    if report.without_personal_fields:
        lines.append(
            f"  {report.without_personal_fields} payload(s) without the personal fields the worker "
            f"removed ({', '.join(PERSONAL_FIELDS)}), so bot and IP flood checks do not apply to them"
        )
    for detail in report.skip_examples:
        lines.append(f"  skipped: {detail}")
    if report.skipped > len(report.skip_examples):
        lines.append(f"  ... {report.skipped - len(report.skip_examples)} more skipped")
    if report.unmatched:
        commit = "a run without --dry-run commits" if report.dry_run else "committed"
        lines.append(
            f"{report.unmatched} dead letter(s) did not match the filters, and group {report.group_id} {commit} "
            "past them. The next run of this group does not read them again, so redrive them with "
            "--from-beginning or another --group."
        )
    if report.dry_run:
        lines.append("dry run: nothing was produced and no offset was committed")
    return "\n".join(lines)


def _start_offsets(consumer: Any, partitions: list[Any], from_beginning: bool) -> dict[Any, int]:
    """Seek each partition to the group's committed offset, or to the beginning, and return the start offsets."""
    beginnings: dict[Any, int] = consumer.beginning_offsets(partitions)
    starts: dict[Any, int] = {}
    for tp in partitions:
        committed = None if from_beginning else consumer.committed(tp)
        # A committed offset below the log start (data deleted by retention) restarts at the log start.
        start = beginnings[tp] if committed is None else max(committed, beginnings[tp])
        consumer.seek(tp, start)
        starts[tp] = start
    return starts


class _Progress:
    """Counts read dead letters: a rich bar on a terminal, else an INFO log line every few seconds."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._task: Any = None
        self._last_log_s = time.monotonic()
        use_bar = sys.stdout.isatty() if enabled is None else enabled
        if use_bar:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]redrive[/] dead letters"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )
            self._bar.start()
            self._task = self._bar.add_task("redrive", total=total)

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now_s = time.monotonic()
        if now_s - self._last_log_s >= _PROGRESS_LOG_INTERVAL_S:
            self._last_log_s = now_s
            log.info("redrive: read %d of %d dead letters", self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _check_target(topic: str, known_topics: set[str], record: DeadLetterRecord) -> RedriveSkip | None:
    if topic in known_topics:
        return None
    return RedriveSkip(
        SKIPPED_MISSING_TOPIC,
        f"dead letter {record.partition}:{record.offset} targets topic {topic!r}, which does not exist; "
        "create it with `roitrack topics create` or redrive to another topic",
    )


def redrive(
    settings: Settings,
    *,
    reason: str | None = None,
    source_topic: str | None = None,
    to_topic: str | None = None,
    dry_run: bool = False,
    from_beginning: bool = False,
    group_id: str | None = None,
    idle_s: float = 2.0,
    progress: bool | None = None,
    producer_factory: Callable[[Settings], Any] = make_producer,
) -> RedriveReport:
    """Re-produce matching dead letters' payloads to their source topics.

    Reads the dead-letter topic through consumer group ``group_id`` (default
    ``<ROITRACK_APP_ID>-redrive``) from its committed offsets, or from the
    beginning with ``from_beginning``, up to the end offsets at the start.
    After each polled batch it waits for the broker to acknowledge what it
    produced and then commits, so a second run does not send the same dead
    letter again. The committed offsets move past dead letters that did not
    match the filters or were skipped, too: redrive those with another
    ``group_id`` or with ``from_beginning``. ``to_topic`` sends every match
    to that topic instead, for example after fixing the routing of a producer.
    A dry run produces and commits nothing. ``plan_redrive`` picks each
    payload's topic and key. ``reason`` must be one of
    ``DEAD_LETTER_REASONS`` (ValueError otherwise), so that a misspelt
    filter cannot commit the group past every dead letter.

    Skipped and counted: truncated payloads, collector dead letters (and
    replay's ``unroutable`` ones) whose payload is not a JSON event of a known
    type, dead letters rejected for their key whose payload has no id to key
    it by, unreadable messages, and targets that do not exist. Personal fields that the worker replaced with
    ``[removed]`` are deleted from the payload before it is sent (see
    ``drop_removed_fields``). ``progress`` shows a progress bar (default:
    when stdout is a terminal).

    NOTE: the partitions are assigned manually with the group's committed
    offsets and the group is never joined, so two redrives running at the
    same time with one ``group_id`` both send the same dead letters.
    """
    if to_topic is not None and not to_topic.strip():
        raise ValueError("to_topic is empty; name a topic or leave it out to use each dead letter's source topic")
    if source_topic is not None and not source_topic.strip():
        raise ValueError("source_topic is empty; name a topic or leave it out to redrive every source topic")
    if group_id is not None and not group_id.strip():
        raise ValueError("group_id is empty; name a consumer group or leave it out for <ROITRACK_APP_ID>-redrive")
    check_reason(reason, DEAD_LETTER_REASONS)
    group = group_id or f"{settings.app_id}-redrive"
    report = RedriveReport(group_id=group, dry_run=dry_run, to_topic=to_topic)
    started_s = time.monotonic()
    consumer = _consumer(settings, group_id=group)
    producer: Any = None
    meter: _Progress | None = None
    try:
        known_topics: set[str] = consumer.topics()
        if to_topic is not None and to_topic not in known_topics:
            raise DeadLettersError(
                f"target topic {to_topic!r} not found on {settings.kafka_bootstrap}; create it first "
                "(`roitrack topics create` creates the pipeline's topics) or check the name"
            )
        partitions = _dead_letter_partitions(settings, consumer, known_topics)
        consumer.assign(partitions)
        starts = _start_offsets(consumer, partitions, from_beginning)
        end_offsets: dict[Any, int] = consumer.end_offsets(partitions)
        total = sum(max(0, end_offsets[tp] - starts[tp]) for tp in partitions)
        log.info(
            "redrive: %d dead letter(s) to read from %s with group %s%s",
            total, settings.topic_dead_letters, group, " (dry run)" if dry_run else "",
        )
        if not dry_run:
            producer = producer_factory(settings)
        meter = _Progress(total, progress)
        for records in _read_batches(consumer, end_offsets, idle_s):
            _redrive_batch(settings, records, report, producer, known_topics, reason, source_topic, to_topic)
            meter.advance(len(records))
            if producer is not None:
                producer.flush()
                consumer.commit(_next_offsets(records))
    except KafkaError as exc:
        raise DeadLettersError(
            f"redrive from {settings.topic_dead_letters!r} on {settings.kafka_bootstrap} failed: {exc}. "
            "Batches committed before the failure are not sent again; run the same command again to "
            "continue, which may send the last uncommitted batch a second time."
        ) from exc
    finally:
        if meter is not None:
            meter.close()
        if producer is not None:
            producer.close()
        consumer.close()
    report.elapsed_s = time.monotonic() - started_s
    log.info(
        "redrive: %s %d, skipped %d, not matching %d, group %s",
        "would send" if dry_run else "sent", report.redriven, report.skipped, report.unmatched, group,
    )
    return report


def _redrive_batch(
    settings: Settings,
    records: Sequence[Any],
    report: RedriveReport,
    producer: Any,
    known_topics: set[str],
    reason: str | None,
    source_topic: str | None,
    to_topic: str | None,
) -> None:
    for message in records:
        report.read += 1
        record = parse_dead_letter(message.partition, message.offset, message.key, message.value)
        if not matches(record, reason, source_topic):
            report.unmatched += 1
            continue
        plan = plan_redrive(settings, record, to_topic)
        if isinstance(plan, RedriveTarget):
            missing = _check_target(plan.topic, known_topics, record)
            if missing is not None:
                plan = missing
        if isinstance(plan, RedriveSkip):
            report.count(plan.outcome, plan.detail)
            continue
        if producer is not None:
            producer.send(plan.topic, key=plan.key, value=plan.value, partition=plan.partition)
        report.count(REDRIVEN)
        report.by_topic[plan.topic] += 1
        if plan.removed_fields:
            report.without_personal_fields += 1


def _next_offsets(records: Sequence[Any]) -> dict[Any, Any]:
    """Return the offsets to commit after ``records``: one past the last per partition."""
    offsets: dict[Any, Any] = {}
    for message in records:
        tp = TopicPartition(message.topic, message.partition)
        known = offsets.get(tp)
        if known is None or message.offset + 1 > known.offset:
            offsets[tp] = OffsetAndMetadata(message.offset + 1, "", -1)
    return offsets
