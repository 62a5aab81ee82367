"""Referral decisions on the referred person's partition, and per-campaign referral totals."""

from __future__ import annotations

from decimal import Decimal

from roitrack.referrals import CodeOwner, PersonReferrals, ReferralItem, ReferralTotals, resolve_referral

T0 = 1_793_613_600_000
ANN = CodeOwner("ann", "spring")


def click(person: str = "bob", code: str | None = "ANN", item_id: str = "c1", anonymous_id: str | None = None) -> ReferralItem:
    return ReferralItem(item_id, "click", person, anonymous_id, code, T0)


def purchase(person: str = "bob", code: str | None = None, item_id: str = "p1", amount: str = "20",
             deal_id: str | None = None, deal_campaign: str | None = None) -> ReferralItem:
    return ReferralItem(item_id, "purchase", person, None, code, T0 + 60_000, Decimal(amount), deal_id, deal_campaign)


def test_first_code_makes_referrer() -> None:
    person = PersonReferrals()

    decisions, writes = resolve_referral(click(), ANN, person)

    assert [(d.campaign_id, d.advocate_id, d.outcome, d.new_person, d.with_code) for d in decisions] == [
        ("spring", "ann", "credited", True, True)
    ]
    assert writes == {"c:spring": "ann"}
    assert person.referrers == {"spring": "ann"}


def test_same_advocate_again_not_new_person() -> None:
    person = PersonReferrals({"spring": "ann"})

    decisions, writes = resolve_referral(click(item_id="c2"), ANN, person)

    assert [(d.outcome, d.new_person) for d in decisions] == [("credited", False)]
    assert writes == {}


def test_second_advocate_rejected_as_repeat() -> None:
    person = PersonReferrals({"spring": "ann"})

    decisions, writes = resolve_referral(click(code="CAT"), CodeOwner("cat", "spring"), person)

    assert [(d.advocate_id, d.outcome) for d in decisions] == [("cat", "repeat")]
    assert writes == {}
    assert person.referrers == {"spring": "ann"}


def test_other_campaign_has_own_referrer() -> None:
    person = PersonReferrals({"spring": "ann"})

    decisions, writes = resolve_referral(click(code="CAT"), CodeOwner("cat", "autumn"), person)

    assert [(d.campaign_id, d.outcome, d.new_person) for d in decisions] == [("autumn", "credited", True)]
    assert writes == {"c:autumn": "cat"}


def test_self_referral_rejected() -> None:
    person = PersonReferrals()

    decisions, writes = resolve_referral(click(person="ann"), ANN, person)

    assert [(d.outcome, d.new_person) for d in decisions] == [("self", False)]
    assert writes == {}
    assert person.referrers == {}


def test_self_referral_by_anonymous_id_rejected() -> None:
    decisions, _ = resolve_referral(click(person="user-9", anonymous_id="ann"), ANN, PersonReferrals())

    assert [d.outcome for d in decisions] == ["self"]


def test_first_purchase_of_referred_person_is_new_customer() -> None:
    person = PersonReferrals({"spring": "ann"})

    decisions, writes = resolve_referral(purchase(), None, person)

    assert [(d.advocate_id, d.new_customer, d.revenue, d.with_code) for d in decisions] == [
        ("ann", True, Decimal("20"), False)
    ]
    assert writes == {"first": "p1"}


def test_second_purchase_no_new_customer() -> None:
    person = PersonReferrals({"spring": "ann"}, first_purchase="p0")

    decisions, writes = resolve_referral(purchase(), None, person)

    assert decisions == []
    assert writes == {}


def test_purchase_before_referral_not_new_customer() -> None:
    person = PersonReferrals()
    resolve_referral(purchase(item_id="p0"), None, person)

    decisions, _ = resolve_referral(purchase(code="ANN", item_id="p2"), ANN, person)

    assert [(d.outcome, d.new_person, d.new_customer, d.with_code) for d in decisions] == [
        ("credited", True, False, True)
    ]


def test_first_purchase_with_code_credits_once() -> None:
    decisions, writes = resolve_referral(purchase(code="ANN"), ANN, PersonReferrals())

    assert len(decisions) == 1
    decision = decisions[0]
    assert (decision.new_person, decision.new_customer, decision.with_code) == (True, True, True)
    assert writes == {"c:spring": "ann", "first": "p1"}


def test_deal_purchase_names_deal_for_its_campaign() -> None:
    person = PersonReferrals({"spring": "ann", "autumn": "cat"}, first_purchase="p0")

    decisions, _ = resolve_referral(purchase(deal_id="deal-1", deal_campaign="spring"), None, person)

    assert [(d.campaign_id, d.advocate_id, d.deal_id, d.new_customer) for d in decisions] == [
        ("spring", "ann", "deal-1", False)
    ]


def test_decision_repeated_after_crash_is_same() -> None:
    stored = PersonReferrals()
    first, _ = resolve_referral(purchase(code="ANN"), ANN, stored)
    # The stored facts were written, but the queue removal was lost: the same item again.
    again, writes = resolve_referral(purchase(code="ANN"), ANN, stored)

    assert [d.new_customer for d in again] == [d.new_customer for d in first]
    assert writes == {}


def test_person_referrals_from_hash() -> None:
    person = PersonReferrals.from_hash({"c:spring": "ann", "first": "p1", "other": "x"})

    assert person.referrers == {"spring": "ann"}
    assert person.first_purchase == "p1"


def test_totals_count_people_actions_and_customers() -> None:
    totals = ReferralTotals()
    totals.apply("ann", "click", True, "credited", True, False, Decimal(0))
    totals.apply("ann", "signup", True, "credited", False, False, Decimal(0))
    totals.apply("ann", "purchase", False, "credited", False, True, Decimal("30"))
    totals.apply("cat", "click", True, "credited", True, False, Decimal(0))
    totals.apply("bob", "click", True, "self", False, False, Decimal(0))
    totals.apply("dan", "click", True, "repeat", False, False, Decimal(0))

    assert totals.referred_people == 2
    assert totals.actions == {"click": 2, "signup": 1, "purchase": 0}
    assert (totals.new_customers, totals.revenue) == (1, Decimal("30"))
    assert (totals.self_rejected, totals.repeat_rejected) == (1, 1)
    assert "bob" not in totals.advocates


def test_top_advocates_ranked() -> None:
    totals = ReferralTotals()
    totals.apply("zed", "click", True, "credited", True, False, Decimal(0))
    totals.apply("amy", "purchase", True, "credited", True, True, Decimal("10"))
    totals.apply("bea", "purchase", True, "credited", True, True, Decimal("25"))
    totals.apply("cid", "click", True, "credited", True, False, Decimal(0))

    assert [advocate for advocate, _ in totals.top_advocates(3)] == ["bea", "amy", "cid"]


def test_totals_json_round_trip() -> None:
    totals = ReferralTotals()
    totals.apply("ann", "purchase", True, "credited", True, True, Decimal("12.5"))
    totals.apply("bob", "click", True, "self", False, False, Decimal(0))

    assert ReferralTotals.from_json(totals.to_json()) == totals
