"""Generated and malformed input thrown at the HTTP collector and straight at the topics, with one worker running.

Both tests keep a ledger of what they sent and then check three properties:

- nothing crashes: no traceback in the worker's or the collector's log, and the
  collector answers no 5xx other than 503 (broker failure);
- every rejected event lands in the dead-letter topic once, with a reason;
- every event that was let through is counted exactly once by the worker. Each
  accepted touchpoint-topic or conversion-topic event ends in exactly one of the
  Redis counters or in one dead letter. Each valid generated purchase (unique ids,
  with a click before it) is attributed exactly once and shows in the lifetime
  roi-update of its campaign.

Run them with ``pytest -m fuzz``.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from kafka import KafkaProducer

from roitrack.settings import Settings
from tests.faults.conftest import FaultSettings, Workers
from tests.fuzz.strategies import (
    CAMPAIGN_TYPES,
    CONVERSION_TYPES,
    PERSON_TYPES,
    Ids,
    encode_json,
    item_shapes,
    materialize_all,
    raw_bodies,
    template,
)
from tests.fuzz.collector import CollectorProcess
from tests.harness import PipelineStats, latest_by_campaign, pipeline_stats, read_topic

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(900)]

MAX_EXAMPLES = int(os.environ.get("ROITRACK_FUZZ_EXAMPLES", "200"))
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKEN = "fuzz-token-" + os.urandom(8).hex()
#: Valid generated events are dated this far ahead of the wall clock, inside the worker's
#: 300 s future limit, so the event-time watermark cannot release a purchase before its click.
VALID_AHEAD_S = 60
@dataclass
class Ledger:
    """What a fuzz test sent, and what the collector or broker reported for it."""

    #: accepted items (collector test) or messages with their items (topic test)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected_reasons: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    http_statuses: Counter[int] = field(default_factory=Counter)
    valid_purchases: dict[str, Decimal] = field(default_factory=dict)
    messages: list["SentMessage"] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class SentMessage:
    topic: str
    partition: int
    offset: int
    items: list[Any]


def valid_journey(ids: Ids, campaign: str, amount: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A click and a purchase one second later by a new person, dated just ahead of the wall clock."""
    at = datetime.now(timezone.utc) + timedelta(seconds=VALID_AHEAD_S)
    person = ids.new("v")
    click = template("click", ids, at, person, campaign)
    purchase = {**template("purchase", ids, at + timedelta(seconds=1), person, campaign), "amount": amount}
    return click, purchase


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2).map(str)


# --- Checks after the run --------------------------------------------------


EVENT_ID = re.compile(r'"event_id":"((?:[^"\\]|\\.)*)"')


def payload_event_id(letter: dict[str, Any]) -> str | None:
    """Return the event id in a dead letter's payload; a cut payload is searched as text."""
    try:
        payload = orjson.loads(letter["payload"])
    except orjson.JSONDecodeError:
        match = EVENT_ID.search(letter["payload"])
        return None if match is None else str(orjson.loads(b'"' + match.group(1).encode() + b'"'))
    if isinstance(payload, dict) and isinstance(payload.get("event_id"), str):
        return str(payload["event_id"])
    return None


def counted_outcomes(stats: PipelineStats) -> int:
    """Sum the counters that take exactly one touchpoint-topic or conversion-topic event each."""
    return (stats.touchpoints + stats.touchpoints_ignored + stats.touchpoints_bot + stats.clicks_flood
            + stats.duplicates + stats.consent_dropped + stats.conversions_received)


def is_link(item: Any) -> tuple[bool, bool]:
    """Return (is an identify, is a conversion with both ids) for an event that the worker did not reject."""
    if not isinstance(item, dict) or item.get("consent") is False:
        return False, False
    if item.get("type") == "identify":
        return True, False
    both = item.get("user_id") is not None and item.get("anonymous_id") is not None
    return False, item.get("type") in CONVERSION_TYPES and both


def assert_valid_journeys(settings: Settings, ledger: Ledger, campaign: str, timeout_s: float = 120.0) -> None:
    """Each valid purchase is attributed exactly once to its click's campaign, and the campaign's totals match."""
    deadline = time.monotonic() + timeout_s
    while True:
        attributions = read_topic(settings, settings.topic_attributions, idle_s=1.0)
        counts = Counter(attribution["conversion_id"] for attribution in attributions)
        missing = [conversion_id for conversion_id in ledger.valid_purchases if counts[conversion_id] == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    assert not missing, f"{len(missing)} of {len(ledger.valid_purchases)} valid purchases were never attributed"
    repeated = {conversion_id: counts[conversion_id] for conversion_id in ledger.valid_purchases if counts[conversion_id] != 1}
    assert not repeated, f"valid purchases attributed more than once: {repeated}"
    by_id = {attribution["conversion_id"]: attribution for attribution in attributions}
    for conversion_id, amount in ledger.valid_purchases.items():
        attribution = by_id[conversion_id]
        assert attribution["basis"] == "touchpoints", attribution
        credit = attribution["credits"]["last_touch"]
        assert [(entry["campaign_id"], Decimal(entry["weight"]), Decimal(entry["revenue"])) for entry in credit] == [
            (campaign, Decimal(1), amount)
        ], attribution

    if not ledger.valid_purchases:
        return
    deadline = time.monotonic() + 30.0
    while True:
        latest = latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=1.0)).get(campaign)
        figures = None if latest is None else latest["models"]["last_touch"]
        expected = (Decimal(len(ledger.valid_purchases)), sum(ledger.valid_purchases.values(), Decimal(0)))
        if figures is not None and (Decimal(figures["conversions"]), Decimal(figures["revenue"])) == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"lifetime last-touch figures of {campaign}: {figures}, expected {expected}")
        time.sleep(1.0)


def assert_no_traceback(*logs: Path) -> None:
    for path in logs:
        text = path.read_text(errors="replace") if path.exists() else ""
        assert "Traceback" not in text, f"{path.name} logged a traceback:\n{text[-6000:]}"


# --- The collector ---------------------------------------------------------


@pytest.fixture
def collector_setup(
    kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers, tmp_path: Path
) -> Iterator[tuple[Settings, CollectorProcess, Path]]:
    settings = fault_settings(kafka_bootstrap, redis_url, collector_tokens=(TOKEN,), pii_salt="fuzz-salt",
                              collector_max_body_bytes=64 * 1024, collector_max_batch_events=50)
    worker = workers.start(settings)
    collector = CollectorProcess(settings, tmp_path)
    try:
        yield settings, collector, worker.log_path
    finally:
        collector.stop()


request_bodies = st.one_of(
    st.tuples(st.just("items"), st.lists(item_shapes(PERSON_TYPES + CAMPAIGN_TYPES), min_size=1, max_size=8),
              st.sampled_from(["list", "events", "single"])),
    st.tuples(st.just("raw"), raw_bodies, st.just("")),
)
tokens = st.sampled_from(["good"] * 8 + ["missing", "wrong"])


def test_collector_batch_fuzz(collector_setup: tuple[Settings, CollectorProcess, Path]) -> None:
    settings, collector, worker_log = collector_setup
    ids = Ids()
    valid_campaign = f"fzv-{ids.run}"
    mutated_campaign = f"fzm-{ids.run}"
    ledger = Ledger()

    @FUZZ_SETTINGS
    @given(body=request_bodies, token_kind=tokens, journey=st.booleans(), amount=amounts)
    def send_one(body: tuple[str, Any, str], token_kind: str, journey: bool, amount: str) -> None:
        if journey:
            for event in valid_journey(ids, valid_campaign, amount):
                status, answer = collector.post_events(orjson.dumps([event]), TOKEN)
                assert status == 200, (status, answer)
                assert answer["results"][0]["status"] == "accepted", answer
                ledger.accepted.append(event)
                if event["type"] == "purchase":
                    ledger.valid_purchases[event["event_id"]] = Decimal(event["amount"])

        kind, content, form = body
        items: list[Any] | None = None
        if kind == "items":
            items = materialize_all(content, ids, datetime.now(timezone.utc) + timedelta(seconds=VALID_AHEAD_S),
                                    mutated_campaign)
            if form == "list":
                raw = encode_json(items)
            elif form == "events":
                raw = encode_json({"events": items})
            else:
                items = items[:1]
                raw = encode_json(items[0])
                if not isinstance(items[0], dict) or ("type" not in items[0] and "events" in items[0]):
                    items = None  # not a single event object: the collector reads it as a body shape
        else:
            raw = content
        token = {"good": TOKEN, "missing": None, "wrong": TOKEN + "x"}[token_kind]
        status, answer = collector.post_events(raw, token)
        ledger.http_statuses[status] += 1

        assert status < 500 or status == 503, f"collector answered {status}: {answer!r}"
        assert (status == 401) == (token_kind != "good"), (status, answer)
        if status != 200:
            return
        results = answer["results"]
        if items is not None:
            assert len(results) == len(items), answer
        for position, result in enumerate(results):
            assert result["index"] == position, result
            ledger.statuses[result["status"]] += 1
            if result["status"] == "rejected":
                assert result["reason"], result
                assert result["errors"], result
                ledger.rejected_reasons.append(result["reason"])
            elif result["status"] == "accepted":
                assert items is not None, f"an item of a body that is not an event list was accepted: {answer}"
                ledger.accepted.append(items[position])
            elif result["status"] == "dropped":
                assert items is not None and items[position].get("consent") is False, result

    started_s = time.monotonic()
    send_one()
    sent_s = time.monotonic() - started_s

    # Every rejected event is in dead-letters once, with its reason.
    letters = read_topic(settings, settings.topic_dead_letters, idle_s=2.0)
    collector_letters = [letter for letter in letters if letter["source_topic"] == "collector"]
    assert sorted(letter["reason"] for letter in collector_letters) == sorted(ledger.rejected_reasons)
    for letter in letters:
        assert letter["reason"], letter
        assert letter["errors"], letter
        assert letter["errors"][0]["reason"], letter

    # Every accepted touchpoint-topic or conversion-topic event is counted once.
    person_items = [item for item in ledger.accepted if item["type"] in PERSON_TYPES]
    person_topics = {settings.topic_touchpoints, settings.topic_conversions}

    def balance() -> tuple[int, int, int, int, int]:
        worker_letters = [letter for letter in read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
                          if letter["source_topic"] in person_topics]
        rejected_ids = {payload_event_id(letter) for letter in worker_letters}
        identifies = conversion_links = 0
        for item in person_items:
            if item["event_id"] in rejected_ids:
                continue
            identify, link = is_link(item)
            identifies += identify
            conversion_links += link
        stats = pipeline_stats(settings)
        return len(person_items), counted_outcomes(stats) + identifies + len(worker_letters), identifies + conversion_links, \
            stats.identity_links, len(worker_letters)

    deadline = time.monotonic() + 120.0
    while True:
        sent, counted, links, link_counter, worker_rejected = balance()
        settled = pipeline_stats(settings)
        if (counted == sent and settled.conversions_done == settled.conversions_received) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    print(f"collector fuzz: {MAX_EXAMPLES} examples sent in {sent_s:.1f} s; HTTP {dict(ledger.http_statuses)}; "
          f"results {dict(ledger.statuses)}; {len(collector_letters)} collector dead letters; "
          f"{worker_rejected} worker dead letters; {len(ledger.valid_purchases)} valid purchases; stats {settled}")
    assert counted == sent, f"{sent} accepted person events, but counters and dead letters account for {counted}"
    assert link_counter == links, f"identity_links {link_counter}, expected {links}"
    assert settled.conversions_done == settled.conversions_received

    assert_valid_journeys(settings, ledger, valid_campaign)
    assert_no_traceback(worker_log, collector.log_path)


# --- Straight at the topics --------------------------------------------------


def count_items(value: bytes | None) -> list[Any]:
    """Return the items the worker decodes from a message: the events of a batch, else the message as one item."""
    try:
        payload = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return [None]
    if isinstance(payload, list) and payload:
        return payload
    return [payload]


keys = st.none() | st.binary(max_size=16) | st.text(max_size=16).map(str.encode)
message_values = st.one_of(
    raw_bodies.map(lambda raw: ("raw", raw)),
    st.just(("null", None)),
    item_shapes(PERSON_TYPES).map(lambda shape: ("single", [shape])),
    st.lists(item_shapes(PERSON_TYPES), max_size=8).map(lambda shapes: ("batch", shapes)),
)
#: "person" keys an event message by its person, as producers must; the rest of the time the key is random.
key_modes = st.sampled_from(["person", "person", "random"])
#: "auto" sends an event message to the topic of its first event's type, as producers must.
topic_choices = st.sampled_from(["auto"] * 6 + ["touchpoints"] * 2 + ["conversions"] * 2 + ["campaigns", "spend"])
#: Messages for the internal credits topic: mutated credits, any JSON value, or raw bytes.
credit_values = st.one_of(
    item_shapes(("credit",)).filter(lambda shape: shape.kind != "variant"),
    raw_bodies,
)


@pytest.fixture
def topic_setup(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> Iterator[tuple[Settings, Path]]:
    settings = fault_settings(kafka_bootstrap, redis_url, pii_salt="fuzz-salt")
    worker = workers.start(settings)
    yield settings, worker.log_path


def test_topic_message_fuzz(topic_setup: tuple[Settings, Path]) -> None:
    settings, worker_log = topic_setup
    ids = Ids()
    valid_campaign = f"fzv-{ids.run}"
    mutated_campaign = f"fzm-{ids.run}"
    ledger = Ledger()
    topics = {"touchpoints": settings.topic_touchpoints, "conversions": settings.topic_conversions,
              "campaigns": settings.topic_campaigns, "spend": settings.topic_spend}
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0,
                             max_request_size=8 * 1024 * 1024, enable_idempotence=False)

    def produce(topic: str, key: bytes | None, value: bytes | None) -> SentMessage:
        metadata = producer.send(topic, key=key, value=value).get(timeout=30)
        # The ROI agent reads a credit message as one item, and an array on the
        # credits topic as a message of social facts, one item per element.
        items = count_items(value)
        message = SentMessage(topic, metadata.partition, metadata.offset, items)
        ledger.messages.append(message)
        return message

    @FUZZ_SETTINGS
    @given(topic=topic_choices, key=keys, key_mode=key_modes, value=message_values, journey=st.booleans(), amount=amounts,
           credit=st.none() | credit_values)
    def send_one(
        topic: str, key: bytes | None, key_mode: str, value: tuple[str, Any], journey: bool, amount: str, credit: Any
    ) -> None:
        if credit is not None:
            at = datetime.now(timezone.utc) + timedelta(seconds=VALID_AHEAD_S)
            raw_credit = credit if isinstance(credit, bytes) else materialize_all([credit], ids, at, mutated_campaign)[0]
            produce(settings.topic_credits, mutated_campaign.encode(),
                    raw_credit if isinstance(raw_credit, bytes) else encode_json(raw_credit))
        if journey:
            click, purchase = valid_journey(ids, valid_campaign, amount)
            produce(settings.topic_touchpoints, click["user_id"].encode(), orjson.dumps(click))
            produce(settings.topic_conversions, purchase["user_id"].encode(), orjson.dumps(purchase))
            ledger.valid_purchases[purchase["event_id"]] = Decimal(amount)

        kind, content = value
        if kind == "raw":
            raw: bytes | None = content
        elif kind == "null":
            raw = None
            key = key or b"tombstone"  # a Kafka message needs a key or a value
        else:
            person = ids.new("m")
            at = datetime.now(timezone.utc) + timedelta(seconds=VALID_AHEAD_S)
            items = materialize_all(content, ids, at, mutated_campaign, person)
            ledger.kinds.update(f"{shape.kind}-{kind}-{key_mode}" for shape in content)
            raw = encode_json(items[0] if kind == "single" else items)
            if key_mode == "person":
                key = person.encode()
            if topic == "auto" and items and isinstance(items[0], dict):
                topic = "conversions" if items[0].get("type") in CONVERSION_TYPES else "touchpoints"
        produce(topics["touchpoints" if topic == "auto" else topic], key, raw)

    started_s = time.monotonic()
    try:
        send_one()
    finally:
        producer.close()
    sent_s = time.monotonic() - started_s

    person_topics = {settings.topic_touchpoints, settings.topic_conversions}
    person_messages = [message for message in ledger.messages if message.topic in person_topics]
    campaign_messages = [message for message in ledger.messages if message.topic in (settings.topic_campaigns, settings.topic_spend)]
    credit_messages = [message for message in ledger.messages if message.topic == settings.topic_credits]
    person_items = sum(len(message.items) for message in person_messages)
    campaign_items = sum(len(message.items) for message in campaign_messages)
    by_position = {(message.topic, message.partition, message.offset): message for message in ledger.messages}

    def account() -> tuple[list[dict[str, Any]], int, int, int]:
        """Return the dead letters, the number of events they reject, and the identify events and conversions with both ids that were not rejected."""
        letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
        rejected: set[tuple[str, int, int, int]] = set()
        for letter in letters:
            source = (letter["source_topic"], letter["source_partition"], letter["source_offset"])
            message = by_position.get(source)
            assert message is not None, f"dead letter of a message that the test did not send: {letter}"
            index = letter["event_index"]
            if index is None and len(message.items) > 1 and message.topic not in person_topics:
                # The ROI agent's route check keeps neither the index nor the event's own payload;
                # only the count matters on these topics.
                index = next((candidate for candidate in range(len(message.items)) if (*source, candidate) not in rejected), None)
                assert index is not None, f"more dead letters than events for message {source}: {letter}"
            elif index is None and len(message.items) > 1:
                # Find the event by its id as well as by event_index.
                event_id = payload_event_id(letter)
                index = next((
                    candidate for candidate, item in enumerate(message.items)
                    if isinstance(item, dict) and item.get("event_id") == event_id and (*source, candidate) not in rejected
                ), None)
                assert index is not None, f"dead letter of an event that message {source} does not carry: {letter}"
            rejected.add((*source, index or 0))
        identifies = conversion_links = 0
        for message in person_messages:
            for index, item in enumerate(message.items):
                if (message.topic, message.partition, message.offset, index) in rejected:
                    continue
                identify, link = is_link(item)
                identifies += identify
                conversion_links += link
        return letters, len(rejected), identifies, conversion_links

    deadline = time.monotonic() + 120.0
    while True:
        letters, rejected_items, identifies, conversion_links = account()
        settled = pipeline_stats(settings)
        person_letter_count = sum(1 for letter in letters if letter["source_topic"] in person_topics)
        balanced = counted_outcomes(settled) + identifies + person_letter_count == person_items
        if (balanced and settled.conversions_done == settled.conversions_received) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    person_letters = [letter for letter in letters if letter["source_topic"] in person_topics]
    print(f"topic fuzz: {len(ledger.messages)} messages ({person_items} person-topic and {campaign_items} "
          f"campaign-topic items, {len(credit_messages)} credits) sent in {sent_s:.1f} s; {len(letters)} dead letters "
          f"{dict(Counter(letter['reason'] for letter in letters))}; {len(ledger.valid_purchases)} valid purchases; "
          f"stats {settled}; kinds {dict(ledger.kinds)}")

    assert len(letters) == rejected_items, "a message or event has more than one dead letter"
    credit_letters = [letter for letter in letters if letter["source_topic"] == settings.topic_credits]
    assert len(letters) - len(person_letters) - len(credit_letters) == campaign_items, "every campaign-topic item is a dead letter"
    assert len(credit_letters) <= sum(len(message.items) for message in credit_messages)
    for letter in letters:
        assert letter["reason"], letter
        assert letter["errors"], letter
        assert letter["errors"][0]["reason"], letter
    counted = counted_outcomes(settled) + identifies + len(person_letters)
    assert counted == person_items, f"{person_items} person-topic events, but counters and dead letters account for {counted}"
    assert settled.identity_links == identifies + conversion_links
    assert settled.conversions_done == settled.conversions_received

    assert_valid_journeys(settings, ledger, valid_campaign)
    assert_no_traceback(worker_log)
