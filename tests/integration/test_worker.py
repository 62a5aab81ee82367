"""Worker behaviour on the real broker and Redis, with one worker for the module.

Each test uses its own person, order and campaign ids, so the tests share the
worker and its topics without seeing each other's figures.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from roitrack.settings import Settings
from tests.harness import (
    T0,
    attribution_for,
    click,
    dead_letters_for,
    ids,
    latest_by_campaign,
    purchase,
    read_topic,
    send,
    view,
    wait_for,
)



def test_invalid_messages_do_not_stop_worker(worker_settings: Settings) -> None:
    settings = worker_settings
    marker = ids("bad")
    person = ids("person")
    bad_values = [
        b"{not json " + marker.encode(),
        orjson.dumps({**purchase(person, T0), "amount": 12.5, "order_id": marker}),
        orjson.dumps({**purchase(person, "2026-11-02T10:00:00"), "order_id": marker}),
        orjson.dumps({"type": "teleport", "event_id": marker, "event_time": T0, "user_id": person}),
        orjson.dumps({**click(person, "camp-x", T0), "user_id": None, "event_id": marker}),
    ]
    for value in bad_values:
        send(settings, settings.topic_conversions, person, value)
    good = purchase(person, "2026-11-02T11:00:00Z")
    send(settings, settings.topic_touchpoints, person, click(person, ids("camp"), "2026-11-02T10:30:00Z"))
    send(settings, settings.topic_conversions, person, good)

    attribution = attribution_for(settings, good["event_id"])
    assert attribution["basis"] == "touchpoints"

    letters = dead_letters_for(settings, marker, len(bad_values))
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == ["invalid", "invalid", "invalid", "undecodable", "unknown_type"]
    fields = {error["field"] for letter in letters for error in letter["errors"]}
    assert {"amount", "event_time", "type", "(message)"} <= fields
    float_letter = next(letter for letter in letters if any(error["field"] == "amount" for error in letter["errors"]))
    assert float_letter["errors"][0]["value"] == "12.5"
    for letter in letters:
        assert letter["source_topic"] == settings.topic_conversions
        assert letter["source_offset"] >= 0


def test_batch_message_rejects_only_bad_event(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    campaign = ids("camp")
    marker = ids("bad")
    good = purchase(person, "2026-11-02T12:00:00Z", amount="25")
    batch = [
        click(person, campaign, "2026-11-02T11:00:00Z"),
        {**click(person, campaign, "2026-11-02T11:10:00Z"), "campaign_id": "", "event_id": marker},
        click(person, campaign, "2026-11-02T11:20:00Z"),
    ]
    send(settings, settings.topic_touchpoints, person, orjson.dumps(batch))
    send(settings, settings.topic_conversions, person, [good])

    attribution = attribution_for(settings, good["event_id"])
    assert len(attribution["touchpoints"]) == 2
    assert attribution["credits"]["last_touch"] == [{"campaign_id": campaign, "weight": "1", "revenue": "25"}]
    letter = dead_letters_for(settings, marker, 1)[0]
    assert letter["event_index"] == 1
    assert letter["errors"][0]["field"] == "campaign_id"


def test_click_beats_view_and_lookbacks(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    clicked, viewed, stale = ids("clicked"), ids("viewed"), ids("stale")
    send(settings, settings.topic_touchpoints, person, [
        click(person, stale, "2026-10-20T09:00:00Z"),  # outside the 7-day click lookback
        click(person, clicked, "2026-11-01T09:00:00Z"),
        view(person, viewed, "2026-11-02T09:00:00Z"),  # a later view loses to the click
    ])
    bought = purchase(person, "2026-11-02T10:00:00Z")
    send(settings, settings.topic_conversions, person, bought)

    attribution = attribution_for(settings, bought["event_id"])
    assert [touch["campaign_id"] for touch in attribution["touchpoints"]] == [clicked]
    for model, credits in attribution["credits"].items():
        assert [credit["campaign_id"] for credit in credits] == [clicked], model

    only_views = ids("person")
    recent, old = ids("recent-view"), ids("old-view")
    send(settings, settings.topic_touchpoints, only_views, [
        view(only_views, old, "2026-11-01T08:00:00Z"),  # outside the 1-day view lookback
        view(only_views, recent, "2026-11-02T08:00:00Z"),
    ])
    bought = purchase(only_views, "2026-11-02T10:00:00Z")
    send(settings, settings.topic_conversions, only_views, bought)
    attribution = attribution_for(settings, bought["event_id"])
    assert [touch["campaign_id"] for touch in attribution["touchpoints"]] == [recent]


def test_coupon_credits_its_campaign(worker_settings: Settings) -> None:
    settings = worker_settings
    campaign = ids("coupon-camp")
    other = ids("other-camp")
    code = ids("CODE").upper()
    send(settings, settings.topic_campaigns, campaign, {
        "type": "campaign", "campaign_id": campaign, "name": "Coupon campaign", "channel": "instagram",
        "start": "2026-11-01T00:00:00Z", "margin": "0.5", "coupon_codes": [code],
    })
    wait_for(lambda: bool(latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=0.5)).get(campaign)),
             60, "the coupon campaign's first update")
    person = ids("person")
    send(settings, settings.topic_touchpoints, person, click(person, other, "2026-11-02T09:00:00Z"))
    bought = purchase(person, "2026-11-02T10:00:00Z", amount="40", coupon_code=code)
    send(settings, settings.topic_conversions, person, bought)

    attribution = attribution_for(settings, bought["event_id"])
    assert attribution["basis"] == "coupon"
    for model, credits in attribution["credits"].items():
        assert credits == [{"campaign_id": campaign, "weight": "1", "revenue": "40"}], model


def test_zero_spend_gives_null_roi(worker_settings: Settings) -> None:
    settings = worker_settings
    campaign = ids("free-camp")
    person = ids("person")
    send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T09:00:00Z"))
    bought = purchase(person, "2026-11-02T10:00:00Z", amount="15")
    send(settings, settings.topic_conversions, person, bought)
    attribution_for(settings, bought["event_id"])

    latest: dict[str, Any] = {}

    def updated() -> bool:
        latest.update(latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=0.5)))
        return campaign in latest and latest[campaign]["models"]["last_touch"]["conversions"] == "1"

    wait_for(updated, 60, "the campaign's update with its conversion")
    update = latest[campaign]
    assert update["spend"] == "0"
    assert update["roi"] is None
    assert update["roas"] is None
    assert update["models"]["last_touch"]["revenue"] == "15"


def test_spend_and_sequence_numbers(worker_settings: Settings) -> None:
    settings = worker_settings
    campaign = ids("paid-camp")
    send(settings, settings.topic_campaigns, campaign, {
        "type": "campaign", "campaign_id": campaign, "name": "Paid", "channel": "facebook",
        "start": "2026-11-01T00:00:00Z", "margin": "0.5",
    })
    send(settings, settings.topic_spend, campaign, {
        "type": "spend", "spend_id": ids("spend"), "campaign_id": campaign, "amount": "100", "currency": "EUR",
        "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-03T00:00:00Z",
    })
    people = [ids("person") for _ in range(5)]
    for person in people:
        send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T09:00:00Z"))
        send(settings, settings.topic_conversions, person, purchase(person, "2026-11-02T10:00:00Z", amount="60"))

    updates: list[dict[str, Any]] = []

    def complete() -> bool:
        updates[:] = [u for u in read_topic(settings, settings.topic_roi_updates, idle_s=0.5) if u["campaign_id"] == campaign]
        latest = latest_by_campaign(updates).get(campaign)
        return latest is not None and latest["models"]["last_touch"]["conversions"] == "5"

    wait_for(complete, 60, "five conversions on the paid campaign")
    latest = latest_by_campaign(updates)[campaign]
    assert Decimal(latest["spend"]) == Decimal(100)
    # ROI = (300 x 0.5 - 100) / 100
    assert Decimal(latest["roi"]) == Decimal("0.5")
    assert Decimal(latest["roas"]) == Decimal(3)
    assert Decimal(latest["cpa"]) == Decimal(20)
    lifetime = [update["sequence"] for update in updates if update["window"] == "lifetime"]
    assert lifetime == sorted(lifetime)
    assert len(lifetime) == len(set(lifetime))
    windows = {update["window"] for update in updates}
    assert windows == {"1h", "24h", "7d", "lifetime"}


def test_wrong_topic_and_currency_rejected(worker_settings: Settings) -> None:
    settings = worker_settings
    person = ids("person")
    marker = ids("order")
    send(settings, settings.topic_touchpoints, person, purchase(person, T0, order_id=marker))
    send(settings, settings.topic_conversions, person, {**purchase(person, T0, order_id=marker + "-usd"), "currency": "USD"})
    letters = dead_letters_for(settings, marker, 2)
    assert sorted(letter["reason"] for letter in letters) == ["unsupported", "unsupported"]
    by_field = {letter["errors"][0]["field"]: letter for letter in letters}
    assert by_field["currency"]["errors"][0]["value"] == "USD"
    assert settings.topic_touchpoints in by_field["type"]["errors"][0]["reason"]


def test_worker_log_has_no_tracebacks(worker_settings: Settings, tmp_path: Path) -> None:
    # The module fixture checks the log at teardown; this test makes sure the
    # fixture ran with at least one message through the worker.
    person = ids("person")
    bought = purchase(person, T0)
    send(worker_settings, worker_settings.topic_conversions, person, bought)
    attribution = attribution_for(worker_settings, bought["event_id"])
    assert attribution["basis"] == "unattributed"
