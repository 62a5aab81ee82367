"""Replay the whole journey dataset through Kafka, the worker and Redis.

The per-channel first-touch, last-touch and linear figures must equal an
independent implementation of ChannelAttribution's heuristic models (checked
against ChannelAttribution's own output in the unit tests). Time-decay and
position-based figures must equal the pure attribution functions applied to
the same journeys.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from roitrack.attribution import AttributionParams, StoredTouch, credit_all_models, eligible_touches
from roitrack.cli import CAMPAIGNS_FILE, JOURNEYS_FILE
from roitrack.journeys import journey_events, load_campaigns, read_journeys
from roitrack.replay import Replayer, make_producer
from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.harness import (
    WorkerProcess,
    latest_by_campaign,
    pipeline_stats,
    read_topic,
    unique_settings,
    wait_for,
)
from tests.reference_heuristics import heuristic_models, read_path_rows

TOLERANCE = Decimal("1e-6")
CONVERSIONS = 19_785
HEURISTIC_COLUMNS = {
    "first_touch": ("first_touch_conversions", "first_touch_value"),
    "last_touch": ("last_touch_conversions", "last_touch_value"),
    "linear": ("linear_touch_conversions", "linear_touch_value"),
}


@pytest.fixture(scope="module")
def journey_wire_events() -> list[dict[str, Any]]:
    return journey_events(read_journeys(JOURNEYS_FILE))


@pytest.fixture(scope="module")
def campaign_wire_events() -> list[dict[str, Any]]:
    campaigns, spends = load_campaigns(CAMPAIGNS_FILE)
    return [*campaigns, *spends]


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def expected_by_model(events: list[dict[str, Any]], settings: Settings) -> dict[str, dict[str, tuple[Decimal, Decimal]]]:
    """Compute (conversions, revenue) per model and campaign with the pure functions."""
    params = AttributionParams(
        lookback_click_ms=settings.lookback_click_s * 1000,
        lookback_view_ms=settings.lookback_view_s * 1000,
        half_life_ms=settings.half_life_s * 1000,
    )
    touches: dict[str, list[StoredTouch]] = defaultdict(list)
    totals: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(lambda: [Decimal(0), Decimal(0)]))
    for event in events:
        if event["type"] == "click":
            touches[event["user_id"]].append(
                StoredTouch(event["event_id"], event["campaign_id"], "click", _ms(event["event_time"]))
            )
        elif event["type"] == "purchase":
            time_ms = _ms(event["event_time"])
            eligible = eligible_touches(touches[event["user_id"]], time_ms, params)
            amount = Decimal(event["amount"])
            for model, weights in credit_all_models(eligible, time_ms, params).items():
                for campaign_id, weight in weights.items():
                    totals[model][campaign_id][0] += weight
                    totals[model][campaign_id][1] += weight * amount
    return {model: {campaign: (pair[0], pair[1]) for campaign, pair in by_campaign.items()}
            for model, by_campaign in totals.items()}


def replay(settings: Settings, events: list[dict[str, Any]], batch_size: int) -> None:
    import orjson

    producer = make_producer(settings)
    try:
        Replayer(settings, producer, batch_size=batch_size).replay(
            (orjson.dumps(event), event) for event in events
        )
    finally:
        producer.close()


def touchpoint_differences(settings: Settings, events: list[dict[str, Any]]) -> list[str]:
    """Describe each attribution whose touchpoints differ from those the pure functions pick."""
    params = AttributionParams(
        lookback_click_ms=settings.lookback_click_s * 1000,
        lookback_view_ms=settings.lookback_view_s * 1000,
        half_life_ms=settings.half_life_s * 1000,
    )
    touches: dict[str, list[StoredTouch]] = defaultdict(list)
    expected: dict[str, set[str]] = {}
    for event in events:
        if event["type"] == "click":
            touches[event["user_id"]].append(
                StoredTouch(event["event_id"], event["campaign_id"], "click", _ms(event["event_time"]))
            )
        elif event["type"] == "purchase":
            eligible = eligible_touches(touches[event["user_id"]], _ms(event["event_time"]), params)
            expected[event["event_id"]] = {touch.event_id for touch in eligible}
    differences = []
    for attribution in read_topic(settings, settings.topic_attributions):
        used = {touch["event_id"] for touch in attribution["touchpoints"]}
        wanted = expected.get(attribution["conversion_id"], set())
        if used != wanted:
            differences.append(f"{attribution['conversion_id']} at {attribution['event_time']} of "
                               f"{attribution['person_id']}: missing {sorted(wanted - used)}, extra {sorted(used - wanted)}")
    return differences


def assert_heuristics_match(settings: Settings) -> dict[str, dict[str, Any]]:
    """Check the latest lifetime figures against ChannelAttribution's heuristic models; return them."""
    updates = read_topic(settings, settings.topic_roi_updates)
    latest = latest_by_campaign(updates)
    reference = heuristic_models(read_path_rows(JOURNEYS_FILE))
    assert sorted(latest) == sorted(reference)

    for model, (conversions_column, value_column) in HEURISTIC_COLUMNS.items():
        for channel, columns in reference.items():
            figures = latest[channel]["models"][model]
            conversions_error = abs(Decimal(figures["conversions"]) - columns[conversions_column])
            revenue_error = abs(Decimal(figures["revenue"]) - columns[value_column])
            assert conversions_error <= TOLERANCE, (model, channel, figures["conversions"], columns[conversions_column])
            assert revenue_error <= TOLERANCE, (model, channel, figures["revenue"], columns[value_column])
    return latest


def assert_matches_references(
    settings: Settings,
    journey_wire_events: list[dict[str, Any]],
    campaign_wire_events: list[dict[str, Any]],
) -> None:
    latest = assert_heuristics_match(settings)

    expected = expected_by_model(journey_wire_events, settings)
    for model in ("time_decay", "position_based"):
        for channel, (conversions, revenue) in expected[model].items():
            figures = latest[channel]["models"][model]
            assert abs(Decimal(figures["conversions"]) - conversions) <= TOLERANCE, (model, channel)
            assert abs(Decimal(figures["revenue"]) - revenue) <= TOLERANCE, (model, channel)

    spend_by_campaign: dict[str, Decimal] = defaultdict(Decimal)
    for event in campaign_wire_events:
        if event["type"] == "spend":
            spend_by_campaign[event["campaign_id"]] += Decimal(event["amount"])
    for channel, update in latest.items():
        assert Decimal(update["spend"]) == spend_by_campaign[channel], channel

    attributions = read_topic(settings, settings.topic_attributions)
    conversion_ids = {attribution["conversion_id"] for attribution in attributions}
    assert len(conversion_ids) == CONVERSIONS
    assert all(attribution["basis"] == "touchpoints" for attribution in attributions)
    assert read_topic(settings, settings.topic_dead_letters, idle_s=1.0) == []


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def e2e_settings(kafka_bootstrap: str, redis_url: str) -> Iterator[Settings]:
    settings = unique_settings(kafka_bootstrap, redis_url)
    create_topics(settings, kafka_bootstrap)
    yield settings
    from tests.conftest import _delete_namespace

    _delete_namespace(settings.redis_url, settings.redis_namespace)


def test_full_replay_matches_references(
    e2e_settings: Settings,
    journey_wire_events: list[dict[str, Any]],
    campaign_wire_events: list[dict[str, Any]],
    log_dir: Path,
) -> None:
    settings = e2e_settings
    worker = WorkerProcess(settings, log_dir).start()
    try:
        replay(settings, campaign_wire_events, batch_size=1)
        replay(settings, journey_wire_events, batch_size=50)
        wait_for(lambda: pipeline_stats(settings).conversions_done >= CONVERSIONS, 300, "all conversions", worker)
        stats = pipeline_stats(settings)
        assert stats.conversions_attributed == CONVERSIONS
        assert stats.dead_letters == 0
        assert_matches_references(settings, journey_wire_events, campaign_wire_events)
    finally:
        worker.stop()


def test_restart_mid_replay_counts_once(
    e2e_settings: Settings,
    journey_wire_events: list[dict[str, Any]],
    campaign_wire_events: list[dict[str, Any]],
    log_dir: Path,
) -> None:
    settings = e2e_settings
    first = WorkerProcess(settings, log_dir, "first").start()
    replay(settings, campaign_wire_events, batch_size=1)
    replayer = threading.Thread(target=replay, args=(settings, journey_wire_events, 20))
    replayer.start()
    try:
        wait_for(lambda: pipeline_stats(settings).conversions_done >= 3000, 300, "3000 conversions", first)
        assert first.stop() == 0, first.log_tail()
        stopped_at = pipeline_stats(settings).conversions_done
        assert stopped_at < CONVERSIONS, "the replay finished before the restart; the test proves nothing"
    finally:
        first.kill()
    second = WorkerProcess(settings, log_dir, "second").start()
    try:
        replayer.join()
        wait_for(lambda: pipeline_stats(settings).conversions_done >= CONVERSIONS, 300, "all conversions", second)
        stats = pipeline_stats(settings)
        assert stats.conversions_attributed == CONVERSIONS
        assert stats.conversions_received == CONVERSIONS
        attributions = read_topic(settings, settings.topic_attributions)
        assert len({attribution["conversion_id"] for attribution in attributions}) == CONVERSIONS
        clicks = sum(1 for event in journey_wire_events if event["type"] == "click")
        print(f"restart: stopped at {stopped_at} conversions; stats {stats}")
        assert stats.touchpoints == clicks, "a touchpoint was lost or stored twice across the restart"
        differences = touchpoint_differences(settings, journey_wire_events)
        print("restart: attributions whose touchpoints differ:", differences)
        for worker in (first, second):
            print(f"restart: idle releases in {worker.log_path.name}:",
                  [line for line in worker.log_text().splitlines() if "idle release" in line][:20])
        assert differences == []
        assert_matches_references(settings, journey_wire_events, campaign_wire_events)
    finally:
        second.stop()


MALFORMED_VALUES: list[tuple[bytes, str]] = [
    (b"{not json", "undecodable"),
    (b'{"type": "purchase", "event_id": "m-%d", "event_time": "2026-11-03T00:00:00Z", "user_id": "m", '
     b'"order_id": "m", "amount": 1.5, "currency": "EUR"}', "invalid"),
    (b'{"type": "click", "event_id": "m-%d", "event_time": "2026-11-03T00:00:00", "user_id": "m", '
     b'"campaign_id": "alpha", "channel": "alpha"}', "invalid"),
    (b'{"type": "teleport", "event_id": "m-%d"}', "unknown_type"),
    (b'{"type": "click", "event_id": "m-%d", "event_time": "2026-11-03T00:00:00Z", "campaign_id": "alpha", '
     b'"channel": "alpha"}', "invalid"),
]


def messy_stream(events: list[dict[str, Any]], seed: int) -> list[tuple[bytes, Any]]:
    """Every event twice, shuffled within its hour of event time, with malformed messages mixed in."""
    import random

    import orjson

    rng = random.Random(seed)
    by_hour: dict[int, list[tuple[bytes, Any]]] = defaultdict(list)
    for event in events:
        hour = _ms(event["event_time"]) // 3_600_000
        raw = orjson.dumps(event)
        by_hour[hour].extend([(raw, event), (raw, event)])
    stream: list[tuple[bytes, Any]] = []
    for hour in sorted(by_hour):
        bucket = by_hour[hour]
        rng.shuffle(bucket)
        stream.extend(bucket)
    for index in range(0, len(stream), 2000):
        template, _ = MALFORMED_VALUES[(index // 2000) % len(MALFORMED_VALUES)]
        raw = template.replace(b"%d", str(index).encode())
        stream.insert(index, (raw, None))
    return stream


def test_messy_replay_matches_clean(
    kafka_bootstrap: str,
    redis_url: str,
    journey_wire_events: list[dict[str, Any]],
    campaign_wire_events: list[dict[str, Any]],
    log_dir: Path,
) -> None:
    # Touchpoints may now arrive up to an hour late in event time, so conversions wait that long.
    # The idle release must not fire while the replay producer pauses in the middle of
    # an hour whose events are shuffled, so it waits longer than any such pause.
    settings = unique_settings(
        kafka_bootstrap, redis_url, conversion_settle_s=2 * 3600.0, conversion_idle_release_s=15.0
    )
    create_topics(settings, kafka_bootstrap)
    stream = messy_stream(journey_wire_events, seed=7)
    malformed = sum(1 for _, event in stream if event is None)
    worker = WorkerProcess(settings, log_dir).start()
    try:
        replay(settings, campaign_wire_events, batch_size=1)
        producer = make_producer(settings)
        try:
            Replayer(settings, producer, batch_size=1).replay(
                (raw, event) for raw, event in stream if event is None
            )
            Replayer(settings, producer, batch_size=50).replay(
                (raw, event) for raw, event in stream if event is not None
            )
        finally:
            producer.close()
        wait_for(lambda: pipeline_stats(settings).conversions_done >= CONVERSIONS, 600, "all conversions", worker)
        stats = pipeline_stats(settings)
        assert stats.conversions_attributed == CONVERSIONS
        assert stats.conversions_received == CONVERSIONS
        assert stats.duplicates == len(journey_wire_events)

        assert_heuristics_match(settings)
        attributions = read_topic(settings, settings.topic_attributions)
        assert len(attributions) == CONVERSIONS

        letters = read_topic(settings, settings.topic_dead_letters)
        assert len(letters) == malformed
        assert all(letter["errors"] and letter["errors"][0]["reason"] for letter in letters)
        reasons = {letter["reason"] for letter in letters}
        assert reasons == {"undecodable", "invalid", "unknown_type"}
    finally:
        worker.stop()
        from tests.conftest import _delete_namespace

        _delete_namespace(settings.redis_url, settings.redis_namespace)
