"""Listing and redriving dead letters on the real broker, with a real worker where it matters."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from roitrack.deadletters import (
    REDRIVEN,
    SKIPPED_MISSING_TOPIC,
    SKIPPED_NOT_JSON,
    SKIPPED_TRUNCATED,
    SKIPPED_UNREADABLE,
    SKIPPED_UNROUTABLE,
    DeadLetterRecord,
    DeadLettersError,
    format_dead_letters,
    format_redrive_report,
    read_dead_letters,
    redrive,
)
from roitrack.replay import UNROUTABLE_KEY
from roitrack.settings import Settings
from roitrack.topics import create_topics
from streams.state import partition_for_key
from tests.harness import WorkerProcess, produce, read_topic, unique_settings, wait_for

T0 = "2026-11-02T10:00:00Z"
PAYLOAD_MAX_BYTES = 512


@pytest.fixture(scope="module")
def worker_settings(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    settings = unique_settings(kafka_bootstrap, redis_url, dead_letter_payload_max_bytes=PAYLOAD_MAX_BYTES)
    create_topics(settings, kafka_bootstrap)
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("worker")).start()
    try:
        yield settings
    finally:
        assert worker.stop() == 0, worker.log_tail()
        log_text = worker.log_text()
        assert "Traceback" not in log_text, log_text[-4000:]
        from tests.conftest import _delete_namespace

        _delete_namespace(settings.redis_url, settings.redis_namespace)


def ids(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def purchase(person: str, **extra: Any) -> dict[str, Any]:
    return {"type": "purchase", "event_id": ids("purchase"), "event_time": T0, "user_id": person,
            "order_id": ids("order"), "amount": "20.00", "currency": "EUR", **extra}


def send(settings: Settings, topic: str, key: str, value: dict[str, Any] | bytes) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    produce(settings, [(topic, key.encode(), raw)])


def letters_with(settings: Settings, markers: list[str], **filters: Any) -> list[DeadLetterRecord]:
    """Wait until a dead letter containing each marker is listed, and return those dead letters."""
    found: list[DeadLetterRecord] = []

    def arrived() -> bool:
        records = read_dead_letters(settings, idle_s=0.5, **filters)
        found[:] = [record for record in records if any(marker in record.payload for marker in markers)]
        return all(any(marker in record.payload for record in found) for marker in markers)

    wait_for(arrived, 60, f"dead letters containing {markers}")
    return found


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, partition) for partition in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def raw_messages(settings: Settings, topic: str) -> list[Any]:
    """Read every message of a topic, undecoded (key, value, partition)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, partition) for partition in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        messages: list[Any] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for records in consumer.poll(timeout_ms=200).values():
                messages.extend(records)
        return messages
    finally:
        consumer.close()


def test_list_shows_reasons_and_errors(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    usd = purchase(person, currency="USD")
    float_amount = {**purchase(person), "amount": 12.5}
    garbage = b"{not json " + ids("garbage").encode()
    send(settings, settings.topic_conversions, person, usd)
    send(settings, settings.topic_conversions, person, float_amount)
    send(settings, settings.topic_conversions, person, garbage)
    markers = [usd["event_id"], float_amount["event_id"], garbage.decode()[10:]]

    letters = letters_with(settings, markers, source_topic=settings.topic_conversions)
    by_reason = {letter.reason: letter for letter in letters}
    assert sorted(by_reason) == ["invalid", "undecodable", "unsupported"]
    assert by_reason["unsupported"].first_error().startswith("currency=USD: only the reporting currency EUR")
    assert by_reason["invalid"].errors[0].field == "amount"
    assert by_reason["invalid"].key == person.encode()
    for letter in letters:
        assert letter.source_topic == settings.topic_conversions
        assert letter.source_offset >= 0
        assert letter.offset >= 0

    table = format_dead_letters(letters, as_json=False)
    assert table.splitlines()[0].split() == ["offset", "reason", "step", "source", "first", "error", "payload"]
    assert "currency=USD: only the reporting currency EUR" in table
    assert f"{settings.topic_conversions}/" in table
    assert table.endswith("3 dead letter(s)")

    lines = format_dead_letters(letters, as_json=True).splitlines()
    parsed = [orjson.loads(line) for line in lines]
    assert len(parsed) == 3
    assert {item["reason"] for item in parsed} == {"invalid", "undecodable", "unsupported"}
    assert all(item["key"] == person for item in parsed)


def test_list_filters_and_limit(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    first, second = purchase(person, currency="USD"), purchase(person, currency="GBP")
    send(settings, settings.topic_conversions, person, first)
    send(settings, settings.topic_conversions, person, second)
    letters_with(settings, [first["event_id"], second["event_id"]])

    unsupported = read_dead_letters(settings, reason="unsupported", idle_s=0.5)
    assert unsupported
    assert {letter.reason for letter in unsupported} == {"unsupported"}
    assert read_dead_letters(settings, source_topic="no-such-topic", idle_s=0.5) == []

    newest = read_dead_letters(settings, reason="unsupported", limit=1, idle_s=0.5)
    assert len(newest) == 1
    assert newest[0] == unsupported[-1]
    assert format_dead_letters([], as_json=False) == "no dead letters found"
    with pytest.raises(ValueError, match="limit must be at least 1"):
        read_dead_letters(settings, limit=0)


def test_redrive_to_fixed_topic_is_attributed(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    misrouted = purchase(person, ip="203.0.113.77", user_agent="Mozilla/5.0", email="Someone@Example.com")
    oversized = b"{not json " + ids("oversized").encode() + b" " + b"x" * (2 * PAYLOAD_MAX_BYTES)
    send(settings, settings.topic_touchpoints, person, misrouted)
    send(settings, settings.topic_touchpoints, person, oversized)
    letters = letters_with(settings, [misrouted["event_id"], oversized[10:30].decode()], source_topic=settings.topic_touchpoints)
    assert sorted(letter.reason for letter in letters) == ["undecodable", "unsupported"]
    assert [letter.payload_truncated for letter in letters if letter.reason == "undecodable"] == [True]
    misrouted_letter = next(letter for letter in letters if letter.reason == "unsupported")
    assert '"ip":"[removed]"' in misrouted_letter.payload
    group = ids("redrive-group")

    # A dry run counts what it would send, produces nothing and commits nothing.
    before = end_offsets(settings, settings.topic_conversions)
    dry = redrive(settings, source_topic=settings.topic_touchpoints, to_topic=settings.topic_conversions,
                  dry_run=True, group_id=group, idle_s=0.5, progress=False)
    assert dry.outcomes[REDRIVEN] == 1
    assert dry.outcomes[SKIPPED_TRUNCATED] == 1
    assert end_offsets(settings, settings.topic_conversions) == before
    assert "would send 1 of" in format_redrive_report(dry)

    report = redrive(settings, source_topic=settings.topic_touchpoints, to_topic=settings.topic_conversions,
                     group_id=group, idle_s=0.5, progress=False)
    assert report.outcomes[REDRIVEN] == 1
    assert report.outcomes[SKIPPED_TRUNCATED] == 1
    assert report.by_topic == {settings.topic_conversions: 1}
    assert report.read >= 2
    assert report.without_personal_fields == 1
    assert any("ROITRACK_DEAD_LETTER_PAYLOAD_MAX_BYTES=512" in detail for detail in report.skip_examples)

    def attributed() -> bool:
        attributions = read_topic(settings, settings.topic_attributions, idle_s=0.5, max_wait_s=10)
        return any(item["conversion_id"] == misrouted["event_id"] for item in attributions)

    wait_for(attributed, 60, f"attribution of the redriven purchase {misrouted['event_id']}")
    redriven = [message for message in raw_messages(settings, settings.topic_conversions)
                if misrouted["event_id"].encode() in message.value]
    assert len(redriven) == 1
    assert redriven[0].key == person.encode()
    sent = orjson.loads(redriven[0].value)
    assert "ip" not in sent
    assert "user_agent" not in sent
    assert "email" not in sent
    assert len(sent["email_sha256"]) == 64
    assert b"[removed]" not in redriven[0].value
    assert b"Someone@Example.com" not in redriven[0].value

    # The group committed: a second run finds nothing new to send.
    before = end_offsets(settings, settings.topic_conversions)
    again = redrive(settings, source_topic=settings.topic_touchpoints, to_topic=settings.topic_conversions,
                    group_id=group, idle_s=0.5, progress=False)
    assert again.outcomes[REDRIVEN] == 0
    assert again.outcomes[SKIPPED_TRUNCATED] == 0
    assert end_offsets(settings, settings.topic_conversions) == before

    # from_beginning reads the whole topic again; this run also draws the progress bar.
    reset = redrive(settings, source_topic=settings.topic_touchpoints, to_topic=settings.topic_conversions,
                    group_id=group, from_beginning=True, dry_run=True, idle_s=0.5, progress=True)
    assert reset.outcomes[REDRIVEN] == 1
    assert reset.outcomes[SKIPPED_TRUNCATED] == 1
    assert end_offsets(settings, settings.topic_conversions) == before


def dead_letter_value(source_topic: str, payload: str | bytes, *, partition: int = 0, offset: int = 0,
                      truncated: bool = False, reason: str = "invalid", field: str = "type") -> bytes:
    text = payload.decode() if isinstance(payload, bytes) else payload
    return orjson.dumps({
        "type": "dead_letter", "reason": reason, "step": "test", "errors": [
            {"field": field, "value": "x", "reason": "test"}],
        "source_topic": source_topic, "source_partition": partition, "source_offset": offset,
        "event_index": None, "payload": text, "payload_truncated": truncated,
        "rejected_at": "2026-11-02T10:00:00Z",
    })


def test_redrive_routes_and_skips(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topics(settings, settings.kafka_bootstrap)
    person = ids("person")
    click = {"type": "click", "event_id": ids("click"), "event_time": T0, "user_id": person,
             "campaign_id": "camp", "channel": "instagram"}
    keyless = {"type": "click", "event_id": ids("keyless"), "event_time": T0, "user_id": person,
               "campaign_id": "camp", "channel": "instagram"}
    batched = [{**keyless, "event_id": ids("batched")}, {**keyless, "event_id": ids("batched")}]
    touchpoints = settings.topic_touchpoints
    dead = settings.topic_dead_letters
    produce(settings, [
        (dead, person.encode(), dead_letter_value("collector", orjson.dumps(click))),
        (dead, b"x", dead_letter_value("collector", "not json at all")),
        (dead, b"x", dead_letter_value("collector", orjson.dumps({"type": "teleport", "user_id": person}))),
        (dead, f"{touchpoints}-2".encode(), dead_letter_value(touchpoints, orjson.dumps(keyless), partition=2)),
        (dead, f"{touchpoints}-3".encode(), dead_letter_value(touchpoints, orjson.dumps(batched), partition=3)),
        (dead, person.encode(), dead_letter_value(touchpoints, '{"type": "click", "cut', truncated=True)),
        (dead, person.encode(), dead_letter_value("topic-that-was-deleted", orjson.dumps(click))),
        (dead, b"x", b"this is not a dead letter"),
    ])

    report = redrive(settings, idle_s=0.5, progress=False)
    assert report.read == 8
    assert report.unmatched == 0
    assert report.outcomes == {
        REDRIVEN: 3,
        SKIPPED_NOT_JSON: 1,
        SKIPPED_UNROUTABLE: 1,
        SKIPPED_TRUNCATED: 1,
        SKIPPED_MISSING_TOPIC: 1,
        SKIPPED_UNREADABLE: 1,
    }
    assert report.by_topic == {touchpoints: 3}
    assert report.group_id == f"{settings.app_id}-redrive"
    summary = format_redrive_report(report)
    assert summary.startswith("sent 3 of 8 dead letter(s) read back to their topics")
    assert "'topic-that-was-deleted', which does not exist" in summary
    assert "did not match the filters" not in summary

    messages = raw_messages(settings, touchpoints)
    by_event = {orjson.loads(message.value)["event_id"]: message for message in messages
                if not message.value.startswith(b"[")}
    assert set(by_event) == {click["event_id"], keyless["event_id"]}
    assert by_event[click["event_id"]].key == person.encode()
    # A single event from a keyless message is keyed by its person, as the worker expects.
    assert by_event[keyless["event_id"]].key == person.encode()
    assert by_event[keyless["event_id"]].partition == partition_for_key(person.encode(), settings.person_partitions)
    # A batch from a keyless message goes back without a key to the partition it came from.
    batches = [message for message in messages if message.value.startswith(b"[")]
    assert len(batches) == 1
    assert batches[0].key is None
    assert batches[0].partition == 3

    assert redrive(settings, idle_s=0.5, progress=False).read == 0


def test_missing_topics_raise_with_fix(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(topic_dead_letters=ids("no-such-dead-letters"))
    with pytest.raises(DeadLettersError, match="ROITRACK_TOPIC_DEAD_LETTERS"):
        read_dead_letters(settings, idle_s=0.5)
    with pytest.raises(DeadLettersError, match="roitrack topics create"):
        redrive(settings, idle_s=0.5, progress=False)

    created = make_settings()
    create_topics(created, created.kafka_bootstrap)
    with pytest.raises(DeadLettersError, match="target topic 'no-such-target' not found"):
        redrive(created, to_topic="no-such-target", idle_s=0.5, progress=False)
    with pytest.raises(ValueError, match="to_topic is empty"):
        redrive(created, to_topic="", idle_s=0.5, progress=False)


def test_redrive_rekeys_wrong_partition(worker_settings: Settings) -> None:
    """Dead letters rejected for their key are keyed by person or campaign id, and the worker accepts them."""
    settings = worker_settings
    group = ids("rekey-group")
    produce(settings, [(settings.topic_dead_letters, b"filler", dead_letter_value("filler", "{}"))])
    # A run whose filter matches nothing commits the group past every dead letter so far, and reports it.
    skipped = redrive(settings, source_topic=ids("no-such-source"), group_id=group, idle_s=0.5, progress=False)
    assert skipped.outcomes[REDRIVEN] == 0
    assert skipped.read >= 1
    assert skipped.unmatched == skipped.read
    assert f"group {group} committed past them" in format_redrive_report(skipped)

    person = ids("person")
    person_partition = partition_for_key(person.encode(), settings.person_partitions)
    person_elsewhere = next(key for key in (f"{person}-{number}" for number in range(100))
                            if partition_for_key(key.encode(), settings.person_partitions) != person_partition)
    order = purchase(person)
    campaign = ids("camp")
    campaign_partition = partition_for_key(campaign.encode(), settings.campaign_partitions)
    campaign_elsewhere = next(key for key in (f"{campaign}-{number}" for number in range(100))
                              if partition_for_key(key.encode(), settings.campaign_partitions) != campaign_partition)
    credit_id = ids("credit")
    credit = {"type": "credit", "credit_id": credit_id, "conversion_id": credit_id, "campaign_id": campaign,
              "event_time": "2026-11-02T10:00:00.000Z", "weights": {"last_touch": "1"},
              "revenue": {"last_touch": "50"}}
    send(settings, settings.topic_conversions, person_elsewhere, order)
    send(settings, settings.topic_credits, campaign_elsewhere, credit)
    letters = letters_with(settings, [order["event_id"], credit_id], reason="unsupported")
    assert [letter.errors[0].field for letter in letters] == ["(key)", "(key)"]

    report = redrive(settings, reason="unsupported", group_id=group, idle_s=0.5, progress=False)
    assert report.read == 2
    assert report.outcomes == {REDRIVEN: 2}
    assert report.by_topic == {settings.topic_conversions: 1, settings.topic_credits: 1}
    assert "did not match the filters" not in format_redrive_report(report)

    # The original message and the redriven one, by key (the two are on different partitions).
    sent_order = {message.key: message.partition for message in raw_messages(settings, settings.topic_conversions)
                  if order["event_id"].encode() in message.value}
    assert set(sent_order) == {person_elsewhere.encode(), person.encode()}
    assert sent_order[person.encode()] == person_partition
    sent_credit = {message.key: message.partition for message in raw_messages(settings, settings.topic_credits)
                   if credit_id.encode() in message.value}
    assert set(sent_credit) == {campaign_elsewhere.encode(), campaign.encode()}
    assert sent_credit[campaign.encode()] == campaign_partition

    def accepted() -> bool:
        attributions = read_topic(settings, settings.topic_attributions, idle_s=0.5, max_wait_s=10)
        updates = read_topic(settings, settings.topic_roi_updates, idle_s=0.5, max_wait_s=10)
        return (any(item["conversion_id"] == order["event_id"] for item in attributions)
                and any(update["campaign_id"] == campaign for update in updates))

    wait_for(accepted, 60, f"attribution of {order['event_id']} and an ROI update of {campaign}")
    again = letters_with(settings, [order["event_id"], credit_id])
    assert len(again) == 2, "the worker rejected a redriven dead letter again"


def test_redrive_rejects_unknown_reason(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topics(settings, settings.kafka_bootstrap)
    person = ids("person")
    late = purchase(person)
    invalid = purchase(person)
    produce(settings, [
        (settings.topic_dead_letters, person.encode(),
         dead_letter_value(settings.topic_conversions, orjson.dumps(invalid), reason="invalid")),
        (settings.topic_dead_letters, person.encode(),
         dead_letter_value(settings.topic_conversions, orjson.dumps(late), reason="late")),
    ])

    with pytest.raises(ValueError, match="invalid dead-letter reason 'Late', expected one of") as raised:
        redrive(settings, reason="Late", idle_s=0.5, progress=False)
    assert "undecodable, invalid, unknown_type, unsupported, late" in str(raised.value)
    with pytest.raises(ValueError, match="invalid dead-letter reason 'Late', expected one of"):
        read_dead_letters(settings, reason="Late", idle_s=0.5)
    assert [letter.reason for letter in read_dead_letters(settings, reason="late", idle_s=0.5)] == ["late"]

    # The rejected run committed nothing, so the run with the right reason still finds the dead letter.
    report = redrive(settings, reason="late", idle_s=0.5, progress=False)
    assert report.outcomes == {REDRIVEN: 1}
    assert report.unmatched == 1
    summary = format_redrive_report(report)
    assert (f"1 dead letter(s) did not match the filters, and group {report.group_id} committed past them"
            in summary)
    assert "--from-beginning" in summary

    dry = redrive(settings, from_beginning=True, dry_run=True, to_topic=settings.topic_touchpoints,
                  idle_s=0.5, progress=False)
    dry_summary = format_redrive_report(dry)
    assert dry_summary.startswith(f"would send 2 of 2 dead letter(s) read to topic {settings.topic_touchpoints}")
    assert "did not match the filters" not in dry_summary


def test_redrive_routes_replay_unroutable(make_settings: Callable[..., Settings]) -> None:
    """Payloads that `roitrack replay` keyed unroutable are routed by type, or skipped when that fails too."""
    settings = make_settings()
    create_topics(settings, settings.kafka_bootstrap)
    person = ids("person")
    routable = purchase(person)
    touchpoints = settings.topic_touchpoints
    produce(settings, [
        (settings.topic_dead_letters, UNROUTABLE_KEY,
         dead_letter_value(touchpoints, orjson.dumps({"type": "teleport", "user_id": person}), reason="unknown_type")),
        (settings.topic_dead_letters, UNROUTABLE_KEY,
         dead_letter_value(touchpoints, orjson.dumps(routable), reason="unknown_type")),
        # A (key) dead letter whose payload has no id to key it by cannot be fixed by a redrive.
        (settings.topic_dead_letters, b"somebody",
         dead_letter_value(touchpoints, orjson.dumps({"type": "click"}), reason="unsupported", field="(key)")),
    ])

    report = redrive(settings, idle_s=0.5, progress=False)
    assert report.outcomes == {REDRIVEN: 1, SKIPPED_UNROUTABLE: 2}
    assert report.by_topic == {settings.topic_conversions: 1}
    summary = format_redrive_report(report)
    assert "produced by `roitrack replay` under the key 'unroutable'" in summary
    assert "rejected for its key, and its payload has no user_id, anonymous_id or campaign_id" in summary
    sent = raw_messages(settings, settings.topic_conversions)
    assert [message.key for message in sent] == [person.encode()]
    assert raw_messages(settings, touchpoints) == []


def test_redrive_wrong_topic_by_type(make_settings: Callable[..., Settings]) -> None:
    """A purchase rejected on the touchpoints topic goes to conversions, unless --to-topic names another topic."""
    settings = make_settings()
    create_topics(settings, settings.kafka_bootstrap)
    person = ids("person")
    misplaced = purchase(person)
    produce(settings, [
        (settings.topic_dead_letters, person.encode(),
         dead_letter_value(settings.topic_touchpoints, orjson.dumps(misplaced), reason="unsupported", field="type")),
    ])

    dry = redrive(settings, dry_run=True, idle_s=0.5, progress=False, group_id=ids("group"))
    forced = redrive(settings, dry_run=True, to_topic=settings.topic_spend, idle_s=0.5, progress=False,
                     group_id=ids("group"))
    report = redrive(settings, idle_s=0.5, progress=False)

    assert dry.by_topic == {settings.topic_conversions: 1}
    assert forced.by_topic == {settings.topic_spend: 1}
    assert report.by_topic == {settings.topic_conversions: 1}
    sent = raw_messages(settings, settings.topic_conversions)
    assert [(message.key, orjson.loads(message.value)["event_id"]) for message in sent] == [
        (person.encode(), misplaced["event_id"])]
    assert raw_messages(settings, settings.topic_touchpoints) == []
