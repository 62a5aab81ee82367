"""Deduplication, event time, identity, privacy and traffic quality on a real worker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import redis

from roitrack.settings import Settings
from streams.state import Keys, partition_for_key
from tests.harness import (
    attribution_for,
    click,
    dead_letters_for,
    ids,
    pipeline_stats,
    purchase,
    read_topic,
    send,
    wait_for,
)


def attributions_of(settings: Settings, conversion_id: str) -> list[dict[str, Any]]:
    return [
        attribution for attribution in read_topic(settings, settings.topic_attributions, idle_s=0.5, max_wait_s=10)
        if attribution["conversion_id"] == conversion_id
    ]


def test_repeated_events_count_once(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    campaign = ids("camp")
    touch = click(person, campaign, "2026-11-02T09:00:00Z")
    bought = purchase(person, "2026-11-02T10:00:00Z", amount="20")
    before = pipeline_stats(settings)
    for _ in range(3):
        send(settings, settings.topic_touchpoints, person, touch)
        send(settings, settings.topic_conversions, person, bought)
    same_order = {**bought, "event_id": ids("purchase")}  # a resent order under a new event id
    send(settings, settings.topic_conversions, person, same_order)

    attribution = attribution_for(settings, bought["event_id"])
    assert len(attribution["touchpoints"]) == 1
    wait_for(lambda: pipeline_stats(settings).duplicates - before.duplicates >= 5, 30, "five duplicates counted")
    assert len(attributions_of(settings, bought["event_id"])) == 1
    assert attributions_of(settings, same_order["event_id"]) == []


def test_late_and_future_events_rejected(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    # Lateness is measured against the partition's latest event time, and the
    # other tests in this module use times on 2026-11-02, so stay near them.
    latest = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    recent = latest.isoformat().replace("+00:00", "Z")
    too_old = (latest - timedelta(seconds=settings.allowed_lateness_s + 3600)).isoformat().replace("+00:00", "Z")
    future = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    late_marker, future_marker = ids("late"), ids("future")
    send(settings, settings.topic_touchpoints, person, click(person, ids("camp"), recent))
    send(settings, settings.topic_touchpoints, person, click(person, ids("camp"), too_old, event_id=late_marker))
    send(settings, settings.topic_touchpoints, person, click(person, ids("camp"), future, event_id=future_marker))

    late = dead_letters_for(settings, late_marker, 1)[0]
    assert late["reason"] == "late"
    assert late["errors"][0]["field"] == "event_time"
    assert "ROITRACK_ALLOWED_LATENESS_S" in late["errors"][0]["reason"]
    ahead = dead_letters_for(settings, future_marker, 1)[0]
    assert ahead["reason"] == "invalid"
    assert "ahead of the worker clock" in ahead["errors"][0]["reason"]


def wait_touch_stored(settings: Settings, person_id: str) -> None:
    """Wait until a person's touchpoint is in Redis.

    An anonymous id's touchpoints live on another partition than the user's
    conversion, and the release waits only for the user's own partition.
    """
    keys = Keys(settings.redis_namespace)
    key = keys.touchpoints(partition_for_key(person_id.encode(), settings.person_partitions), person_id)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        wait_for(lambda: bool(client.exists(key)), 60, f"the touchpoint of {person_id} in Redis")
    finally:
        client.close()


def test_identify_links_earlier_anonymous_touches(worker_settings: Settings) -> None:
    settings = worker_settings
    anonymous_id = ids("anon")
    user_id = ids("user")
    campaign = ids("camp")
    anonymous_click = {**click(user_id, campaign, "2026-11-02T08:00:00Z"), "user_id": None, "anonymous_id": anonymous_id}
    del anonymous_click["user_id"]
    send(settings, settings.topic_touchpoints, anonymous_id, anonymous_click)
    wait_touch_stored(settings, anonymous_id)
    send(settings, settings.topic_touchpoints, user_id, {
        "type": "identify", "event_id": ids("identify"), "event_time": "2026-11-02T09:00:00Z",
        "user_id": user_id, "anonymous_id": anonymous_id,
    })
    bought = purchase(user_id, "2026-11-02T10:00:00Z", amount="30")
    send(settings, settings.topic_conversions, user_id, bought)

    attribution = attribution_for(settings, bought["event_id"])
    assert attribution["basis"] == "touchpoints"
    assert [touch["campaign_id"] for touch in attribution["touchpoints"]] == [campaign]


def test_conversion_with_both_ids_links_them(worker_settings: Settings) -> None:
    settings = worker_settings
    anonymous_id = ids("anon")
    user_id = ids("user")
    campaign = ids("camp")
    anonymous_click = click(user_id, campaign, "2026-11-02T08:00:00Z")
    anonymous_click.pop("user_id")
    anonymous_click["anonymous_id"] = anonymous_id
    send(settings, settings.topic_touchpoints, anonymous_id, anonymous_click)
    wait_touch_stored(settings, anonymous_id)
    bought = {**purchase(user_id, "2026-11-02T10:00:00Z"), "anonymous_id": anonymous_id}
    send(settings, settings.topic_conversions, user_id, bought)

    attribution = attribution_for(settings, bought["event_id"])
    assert [touch["campaign_id"] for touch in attribution["touchpoints"]] == [campaign]


def test_consent_false_dropped_and_counted(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    before = pipeline_stats(settings)
    send(settings, settings.topic_touchpoints, person, {**click(person, ids("camp"), "2026-11-02T09:00:00Z"), "consent": False})
    refused = {**purchase(person, "2026-11-02T10:00:00Z"), "consent": False}
    send(settings, settings.topic_conversions, person, refused)
    wait_for(lambda: pipeline_stats(settings).consent_dropped - before.consent_dropped >= 2, 30, "two consent drops")
    assert attributions_of(settings, refused["event_id"]) == []


def test_personal_data_never_stored_raw(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    email = f"{ids('ann')}@example.com"
    bad_marker = ids("bad")
    send(settings, settings.topic_touchpoints, person, {
        **click(person, ids("camp"), "2026-11-02T09:00:00Z"), "email": email, "ip": "203.0.113.77",
    })
    send(settings, settings.topic_touchpoints, person, {
        **click(person, ids("camp"), "2026-11-02T09:00:00Z", event_id=bad_marker),
        "email": email, "ip": "203.0.113.77", "channel": "",
    })
    letter = dead_letters_for(settings, bad_marker, 1)[0]
    assert email not in letter["payload"]
    assert "203.0.113.77" not in letter["payload"]

    client = redis.Redis.from_url(settings.redis_url)
    try:
        for key in client.scan_iter(match=f"{settings.redis_namespace}:*"):
            if client.type(key) == b"zset":
                stored = b"".join(member for member, _ in client.zrange(key, 0, -1, withscores=True))
                assert email.encode() not in stored
    finally:
        client.close()


def test_bots_and_floods_not_credited(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    bot_campaign, flood_campaign = ids("bot-camp"), ids("flood-camp")
    before = pipeline_stats(settings)
    send(settings, settings.topic_touchpoints, person, {
        **click(person, bot_campaign, "2026-11-02T09:00:00Z"), "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)",
    })
    flood = [
        click(person, flood_campaign, f"2026-11-02T09:30:{second:02d}Z")
        for second in range(settings.flood_max_clicks + 5)
    ]
    send(settings, settings.topic_touchpoints, person, orjson.dumps(flood))
    bought = purchase(person, "2026-11-02T10:00:00Z")
    send(settings, settings.topic_conversions, person, bought)

    attribution = attribution_for(settings, bought["event_id"])
    campaigns = {touch["campaign_id"] for touch in attribution["touchpoints"]}
    assert bot_campaign not in campaigns
    assert len(attribution["touchpoints"]) == settings.flood_max_clicks
    stats = pipeline_stats(settings)
    assert stats.touchpoints_bot - before.touchpoints_bot == 1
    assert stats.clicks_flood - before.clicks_flood == 5


def test_flood_from_one_address(worker_settings: Settings) -> None:
    settings = worker_settings
    before = pipeline_stats(settings)
    address = "198.51.100.23"
    people = [ids("person") for _ in range(settings.flood_max_clicks + 3)]
    for person in people:
        send(settings, settings.topic_touchpoints, person, {
            **click(person, ids("camp"), "2026-11-02T11:00:10Z"), "ip": address,
        })
    wait_for(lambda: pipeline_stats(settings).clicks_flood - before.clicks_flood >= 3, 30, "three address floods")
    keys = Keys(settings.redis_namespace)
    assert keys.flood_address("198.51.100.0", 0).startswith(settings.redis_namespace)
