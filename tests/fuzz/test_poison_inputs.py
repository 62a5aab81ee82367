"""Single inputs, found by fuzzing, that stopped or misled the collector or the worker.

Each test sends one such input and then checks that the pipeline goes on: the input gets
an HTTP status or a dead letter, a valid purchase sent after it is attributed, and no
traceback is logged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from roitrack.settings import Settings
from streams.state import partition_for_key
from tests.faults.conftest import FaultSettings, Workers
from tests.fuzz.collector import CollectorProcess
from tests.harness import (
    WorkerProcess,
    click,
    ids,
    latest_by_campaign,
    purchase,
    read_topic,
    send,
)

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(300)]

TOKEN = "poison-token"
#: How long a valid purchase sent after the poison may take to be attributed.
FOLLOW_UP_TIMEOUT_S = 45.0
DEEP = 300  # orjson parses up to 1,024 levels but serializes only 254


def attributed_ids(settings: Settings) -> set[str]:
    return {attribution["conversion_id"] for attribution in read_topic(settings, settings.topic_attributions, idle_s=1.0)}


def send_follow_up(settings: Settings, avoid_partition: int | None = None) -> str:
    """Send a click and then a purchase by a new person; return the purchase's event id.

    ``avoid_partition`` picks a person whose conversions go to another partition.
    """
    person = ids("follow-up")
    while partition_for_key(person.encode(), settings.person_partitions) == avoid_partition:
        person = ids("follow-up")
    send(settings, settings.topic_touchpoints, person, click(person, ids("camp"), "2026-11-02T11:00:00Z"))
    later = purchase(person, "2026-11-02T11:05:00Z")
    send(settings, settings.topic_conversions, person, later)
    return str(later["event_id"])


def assert_follow_up_attributed(settings: Settings, worker: WorkerProcess, conversion_id: str) -> None:
    deadline = time.monotonic() + FOLLOW_UP_TIMEOUT_S
    while conversion_id not in attributed_ids(settings):
        assert worker.running, f"the worker exited; log:\n{worker.log_tail()}"
        if time.monotonic() > deadline:
            errors = [line for line in worker.log_text().splitlines() if "ERROR" in line or "Error" in line]
            raise AssertionError(
                f"a valid purchase sent after the poison was not attributed within {FOLLOW_UP_TIMEOUT_S} s; "
                f"last errors in the worker log:\n" + "\n".join(errors[-6:])
            )
        time.sleep(1.0)


def started_worker(
    kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers, avoid_partition: int | None = None
) -> tuple[Settings, WorkerProcess]:
    """Start a worker and wait until it has attributed a first purchase, so it consumes the poison at once."""
    settings = fault_settings(kafka_bootstrap, redis_url)
    worker = workers.start(settings)
    assert_follow_up_attributed(settings, worker, send_follow_up(settings, avoid_partition))
    return settings, worker


def wait_for_roi_update(settings: Settings, worker: Any, campaign: str) -> None:
    """Wait until a RoiUpdate of ``campaign`` is out, failing early when the worker exited."""
    deadline = time.monotonic() + FOLLOW_UP_TIMEOUT_S
    while campaign not in latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=1.0)):
        assert worker.running, f"the worker exited; log:\n{worker.log_tail(60)}"
        assert time.monotonic() < deadline, f"no roi-update of {campaign} within {FOLLOW_UP_TIMEOUT_S} s"
        time.sleep(1.0)


def send_then_settle(settings: Settings, topic: str, key: str, value: Any) -> None:
    """Send the poison and give the worker time to take it before anything else arrives."""
    send(settings, topic, key, value)
    time.sleep(3.0)


def test_purchase_of_largest_amount(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """15 integer and 12 fraction digits, split over three campaigns: quantizing the shares needs more than 28 digits."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    person = ids("rich")
    for minute, campaign in enumerate(("camp-a", "camp-b", "camp-c")):
        send(settings, settings.topic_touchpoints, person, click(person, ids(campaign), f"2026-11-02T10:0{minute}:00Z"))
    poison = purchase(person, "2026-11-02T10:05:00Z", amount="999999999999999.999999999999")
    send_then_settle(settings, settings.topic_conversions, person, poison)

    assert_follow_up_attributed(settings, worker, send_follow_up(settings))
    assert poison["event_id"] in attributed_ids(settings)
    assert "Traceback" not in worker.log_text()


def test_purchase_before_year_one_utc(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """0001-01-01T00:00:00+14:00 is before year 1 in UTC; as the partition's first conversion it is not late."""
    person = ids("ancient")
    settings, worker = started_worker(
        kafka_bootstrap, redis_url, fault_settings, workers,
        avoid_partition=partition_for_key(person.encode(), 4),
    )
    assert settings.person_partitions == 4
    poison = purchase(person, "0001-01-01T00:00:00+14:00")
    send_then_settle(settings, settings.topic_conversions, person, poison)

    assert_follow_up_attributed(settings, worker, send_follow_up(settings))
    letters = [letter for letter in read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
               if poison["event_id"] in letter["payload"]]
    assert [(letter["reason"], letter["errors"][0]["field"]) for letter in letters] == [("invalid", "event_time")]
    assert "Traceback" not in worker.log_text()


def deep_batch() -> bytes:
    """A batch message whose one element is nested DEEP levels deep."""
    return b"[" * (DEEP + 1) + b"]" * (DEEP + 1)


def deep_field_event() -> bytes:
    """A click whose utm_content is an object nested DEEP levels deep."""
    event = click(ids("deep"), "camp-deep", "2026-11-02T10:00:00Z")
    head = orjson.dumps(event)[:-1]
    return head + b', "utm_content": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}"


@pytest.mark.parametrize("value", [deep_batch(), deep_field_event()], ids=["deep-batch", "deep-field"])
def test_deeply_nested_message(value: bytes, kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    send_then_settle(settings, settings.topic_touchpoints, "deep", value)

    assert_follow_up_attributed(settings, worker, send_follow_up(settings))
    letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
    assert [letter["source_topic"] for letter in letters] == [settings.topic_touchpoints]
    assert "Traceback" not in worker.log_text()


#: A batch the fuzzing found: orjson reads it, but repr() of its one element passed
#: Python's recursion limit inside the collector's request handler, which returned status 500.
COLLECTOR_DEEP_BATCH = b"[" * 979 + b"]" * 979


@pytest.mark.parametrize("body", [deep_batch(), deep_field_event(), COLLECTOR_DEEP_BATCH],
                         ids=["deep-batch", "deep-field", "deep-batch-979"])
def test_collector_deeply_nested_body(body: bytes, kafka_bootstrap: str, fault_settings: FaultSettings, tmp_path: Path) -> None:
    settings = fault_settings(kafka_bootstrap, "redis://127.0.0.1:1/0", collector_tokens=(TOKEN,))
    collector = CollectorProcess(settings, tmp_path)
    try:
        status, answer = collector.post_events(body, TOKEN)
    finally:
        collector.stop()
    assert status in (200, 400), (status, answer)
    if status == 200:
        assert [result["status"] for result in answer["results"]] == ["rejected"]
    assert "Traceback" not in collector.log_path.read_text(errors="replace")


def test_malformed_credit(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """A message on the internal credits topic with every field present but an invalid event time."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    campaign = ids("camp")
    bad_credit = {"type": "credit", "credit_id": f"x:{campaign}", "conversion_id": "x", "campaign_id": campaign,
                  "event_time": "not a time", "weights": {}, "revenue": {}}
    send_then_settle(settings, settings.topic_credits, campaign, bad_credit)

    person = ids("person")
    send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T10:00:00Z"))
    send(settings, settings.topic_conversions, person, purchase(person, "2026-11-02T10:05:00Z"))
    deadline = time.monotonic() + FOLLOW_UP_TIMEOUT_S
    while campaign not in latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=1.0)):
        assert time.monotonic() < deadline, f"no roi-update of {campaign} within {FOLLOW_UP_TIMEOUT_S} s"
        time.sleep(1.0)
    letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
    assert [letter["source_topic"] for letter in letters] == [settings.topic_credits]
    assert "Traceback" not in worker.log_text()


def test_credit_array_with_deep_item(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """A credit array whose first item nests 500 levels deep: orjson reads it but cannot write it back."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    campaign = ids("camp")
    good_credit = {"type": "credit", "credit_id": ids("credit"), "conversion_id": ids("conversion"), "campaign_id": campaign,
                   "event_time": "2026-11-02T10:00:00Z", "weights": {"last_touch": "1"}, "revenue": {"last_touch": "30"}}
    deep = b'{"type": "credit", "credit_id": "deep", "weights": ' + b"[" * 500 + b"]" * 500 + b"}"
    send_then_settle(settings, settings.topic_credits, campaign, b"[" + deep + b", " + orjson.dumps(good_credit) + b"]")

    wait_for_roi_update(settings, worker, campaign)
    letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
    assert [(letter["source_topic"], letter["event_index"]) for letter in letters] == [(settings.topic_credits, 0)]
    assert "Traceback" not in worker.log_text()


def test_credit_with_huge_revenue(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """A credit whose revenue is a finite but huge decimal, for a campaign with spend."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    campaign = ids("camp")
    send(settings, settings.topic_spend, campaign, {
        "type": "spend", "spend_id": ids("spend"), "campaign_id": campaign, "amount": "10", "currency": "EUR",
        "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-03T00:00:00Z",
    })
    huge_credit = {"type": "credit", "credit_id": ids("credit"), "conversion_id": ids("conversion"), "campaign_id": campaign,
                   "event_time": "2026-11-02T10:00:00Z", "weights": {"last_touch": "1"}, "revenue": {"last_touch": "1E+100"}}
    send_then_settle(settings, settings.topic_credits, campaign, huge_credit)

    later_campaign = ids("camp")
    person = ids("person")
    send(settings, settings.topic_touchpoints, person, click(person, later_campaign, "2026-11-02T10:00:00Z"))
    send(settings, settings.topic_conversions, person, purchase(person, "2026-11-02T10:05:00Z"))
    wait_for_roi_update(settings, worker, later_campaign)
    letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0)
    assert [(letter["source_topic"], letter["errors"][0]["field"]) for letter in letters] == [
        (settings.topic_credits, "revenue")]
    assert "Traceback" not in worker.log_text()


def test_credit_ids_with_colons(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """Ids may contain ':', so joining person, conversion and campaign ids with ':' would not make credit ids unique."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    person = ids("person")
    campaign = ids("camp")
    purchases = [(person, "x:order"), (f"{person}:x", "order")]
    for person_id, conversion_id in purchases:
        send(settings, settings.topic_touchpoints, person_id, click(person_id, campaign, "2026-11-02T10:00:00Z"))
        send(settings, settings.topic_conversions, person_id,
             {**purchase(person_id, "2026-11-02T10:05:00Z"), "event_id": conversion_id})

    deadline = time.monotonic() + FOLLOW_UP_TIMEOUT_S
    while not {"x:order", "order"} <= attributed_ids(settings):
        assert time.monotonic() < deadline, "the two purchases were not attributed"
        time.sleep(1.0)
    time.sleep(2.0)  # the ROI agent publishes at most every roi_update_interval_s
    latest = latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=1.0))
    assert latest[campaign]["models"]["last_touch"]["conversions"] == "2"


def test_batch_dead_letter_names_event_index(
    kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers
) -> None:
    """README: a dead letter carries the event's index inside a batch message."""
    settings, worker = started_worker(kafka_bootstrap, redis_url, fault_settings, workers)
    person = ids("person")
    batch: list[dict[str, Any]] = [
        click(person, "camp", "2026-11-02T10:00:00Z"),
        click(person, "camp", "2099-01-01T00:00:00Z"),  # valid, but too far ahead of the worker clock
    ]
    send(settings, settings.topic_touchpoints, person, orjson.dumps(batch))

    deadline = time.monotonic() + FOLLOW_UP_TIMEOUT_S
    while not (letters := read_topic(settings, settings.topic_dead_letters, idle_s=1.0)):
        assert time.monotonic() < deadline, "no dead letter for the event dated 2099"
        time.sleep(1.0)
    assert [letter["reason"] for letter in letters] == ["invalid"]
    assert letters[0]["event_index"] == 1
