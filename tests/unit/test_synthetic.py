"""The synthetic social day: deterministic, valid events covering every feature, and its ground truth."""

from __future__ import annotations

import copy

import pytest

from roitrack.synthetic import compare, generate, ground_truth
from schemas.decode import Rejected, validate_event


def test_same_seed_same_day() -> None:
    assert generate(3).events == generate(3).events


def test_other_seed_other_day() -> None:
    assert generate(3).traffic != generate(4).traffic


def test_too_few_people_rejected() -> None:
    with pytest.raises(ValueError, match="at least 40"):
        generate(1, people=10)


def test_every_event_validates() -> None:
    rejected = [event for event in generate(5).events if isinstance(validate_event(event, None, b""), Rejected)]

    assert rejected == []


def test_traffic_sorted_by_event_time() -> None:
    times = [event["event_time"] for event in generate(5).traffic]

    assert times == sorted(times)


def test_day_covers_every_feature() -> None:
    day = generate(5)
    types = {event["type"] for event in day.events}
    kinds = {event["kind"] for event in day.traffic if event["type"] == "touch"}

    assert {"campaign", "deal", "spend", "impressions", "follower_snapshot", "touch", "click", "checkin",
            "identify", "coupon_redemption", "purchase"} <= types
    assert kinds == {"view", "like", "share", "comment", "follow"}
    assert any(event["type"] == "click" and event.get("referral_code") for event in day.traffic)
    assert any(event["type"] == "purchase" and event.get("deal_id") for event in day.traffic)
    assert len({event["event_id"] for event in day.traffic}) < len(day.traffic), "some events repeat"


def test_ground_truth_deals_and_rejections() -> None:
    truth = ground_truth(generate(5))

    deals = {deal["deal_id"]: deal for deal in truth["family-deals"]["deals"]}
    assert deals["sofa-group"]["status"] == "active"
    assert deals["sofa-group"]["rewards"] == 1
    assert deals["bbq-group"]["status"] == "expired"
    assert deals["bbq-group"]["refunds"] == deals["bbq-group"]["buyers"]
    assert truth["family-deals"]["spend"] == "549"
    assert truth["glow-up"]["referrals"]["self_referrals_rejected"] == 1
    assert truth["glow-up"]["referrals"]["repeat_referrals_rejected"] == 1


def test_ground_truth_excludes_bots_and_repeats() -> None:
    day = generate(5)
    truth = ground_truth(day)
    bots = [event for event in day.traffic if event.get("user_agent", "").startswith("facebookexternalhit")]
    unique_likes = {
        event["event_id"] for event in day.traffic
        if event["type"] == "touch" and event["kind"] == "like" and event not in bots
    }

    assert bots
    assert sum(campaign["engagement"]["engagements"]["like"] for campaign in truth.values()) == len(unique_likes)


def test_compare_names_each_difference() -> None:
    truth = ground_truth(generate(5))
    updates = {campaign_id: copy.deepcopy(figures) for campaign_id, figures in truth.items()}

    assert compare(truth, updates) == []
    updates["glow-up"]["engagement"]["total"] += 1
    updates["dance-off"]["spend"] = "651.00"
    updates.pop("launch-thread")

    differences = compare(truth, updates)
    assert len(differences) == 3
    assert any(difference.startswith("glow-up.engagement.total") for difference in differences)
    assert "launch-thread: no lifetime update" in differences


def test_compare_equal_decimal_spellings() -> None:
    truth = ground_truth(generate(5))
    updates = copy.deepcopy(truth)
    updates["glow-up"]["spend"] = "900.000"

    assert compare(truth, updates) == []
