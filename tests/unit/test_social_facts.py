"""Social facts on the credits topic: deterministic ids, packing and validation."""

from __future__ import annotations

from decimal import Decimal

from roitrack.referrals import ReferralDecision
from schemas.events import SocialTouch
from schemas.outputs import EngagementFact, FieldError, ReferralFact
from streams.deals import deal_event_id
from streams.facts import MAX_FACTS_PER_MESSAGE, decode_facts, engagement_fact, is_fact_message, pack_facts, referral_fact


def share(**changes: object) -> SocialTouch:
    data: dict[str, object] = {
        "type": "touch", "kind": "share", "event_id": "s-1", "event_time": "2026-11-02T10:00:00Z",
        "user_id": "ann", "campaign_id": "spring", "channel": "instagram",
    }
    data.update(changes)
    return SocialTouch.model_validate(data)


def decision(**changes: object) -> ReferralDecision:
    values: dict[str, object] = {
        "item_id": "c-1", "campaign_id": "spring", "advocate_id": "ann", "person_id": "bob", "action": "click",
        "with_code": True, "outcome": "credited", "new_person": True, "new_customer": False,
        "revenue": Decimal(0), "deal_id": None, "time_ms": 1_793_613_600_000,
    }
    values.update(changes)
    return ReferralDecision(**values)


def test_engagement_fact_id_depends_on_event_only() -> None:
    assert engagement_fact(share())["fact_id"] == engagement_fact(share(channel="tiktok"))["fact_id"]
    assert engagement_fact(share())["fact_id"] != engagement_fact(share(event_id="s-2"))["fact_id"]


def test_engagement_fact_validates() -> None:
    fact = EngagementFact.model_validate(engagement_fact(share(deal_id="deal-1", referral_code="ANN")))

    assert (fact.advocate_id, fact.deal_id, fact.kind) == ("ann", "deal-1", "share")


def test_plain_engagement_names_no_advocate() -> None:
    assert "advocate_id" not in engagement_fact(share(kind="like"))


def test_referral_fact_validates() -> None:
    fact = ReferralFact.model_validate(referral_fact(decision(new_customer=True, revenue=Decimal("12.50"))))

    assert fact.revenue == Decimal("12.5")
    assert fact.new_person


def test_referral_fact_id_per_advocate() -> None:
    assert referral_fact(decision())["fact_id"] != referral_fact(decision(advocate_id="cat"))["fact_id"]


def test_pack_groups_by_campaign_and_splits() -> None:
    facts = [engagement_fact(share(event_id=f"s-{index}")) for index in range(MAX_FACTS_PER_MESSAGE + 1)]
    facts.append(engagement_fact(share(campaign_id="autumn")))

    messages = pack_facts("credits", facts)

    assert [(message.key, len(message.value)) for message in messages] == [
        ("autumn", 1), ("spring", MAX_FACTS_PER_MESSAGE), ("spring", 1)
    ]


def test_fact_message_told_from_credit() -> None:
    assert is_fact_message([{"type": "engagement"}])
    assert is_fact_message({"type": "referral"})
    assert not is_fact_message({"type": "credit"})
    assert not is_fact_message({"type": {"nested": "object"}})


def test_decode_names_field_of_bad_fact() -> None:
    good = engagement_fact(share())
    bad = {**good, "kind": "view"}

    decoded = decode_facts([good, bad], "spring")

    assert isinstance(decoded[0][1], EngagementFact)
    index, problem = decoded[1]
    assert index == 1
    assert isinstance(problem, FieldError)
    assert (problem.field, problem.value) == ("kind", "view")


def test_decode_names_unreadable_revenue() -> None:
    good = referral_fact(decision(new_customer=True, revenue=Decimal("12.50")))

    decoded = decode_facts([{**good, "revenue": "abc"}, {**good, "revenue": "1e999999"}], "spring")

    problems = [problem for _, problem in decoded]
    assert all(isinstance(problem, FieldError) for problem in problems)
    assert [(problem.field, problem.value) for problem in problems] == [("revenue", "abc"), ("revenue", "1e999999")]
    assert "must be a decimal string" in problems[0].reason
    assert "more than 30 integer digits" in problems[1].reason


def test_decode_rejects_fact_under_other_key() -> None:
    [(_, problem)] = decode_facts(engagement_fact(share()), "autumn")

    assert isinstance(problem, FieldError)
    assert problem.field == "campaign_id"


def test_decode_rejects_empty_array() -> None:
    [(_, problem)] = decode_facts([], "spring")

    assert isinstance(problem, FieldError)


def test_deal_event_ids_stable_and_distinct() -> None:
    assert deal_event_id("deal_activated", "d1") == deal_event_id("deal_activated", "d1")
    assert deal_event_id("advocate_reward", "d1", "ann") != deal_event_id("advocate_reward", "d1", "bob")


def test_decode_survives_deep_nesting() -> None:
    nested: object = []
    for _ in range(1000):
        nested = [nested]

    decoded = decode_facts([nested, {"type": "engagement", "fact_id": nested}], "spring")

    assert [problem.field for _, problem in decoded if isinstance(problem, FieldError)] == ["(fact)", "fact_id"]
