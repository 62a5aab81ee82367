"""The group-buy deal state machine: activation, expiry, refunds and advocate rewards."""

from __future__ import annotations

from decimal import Decimal

from roitrack.deals import Activated, DealPurchase, DealState, Expired, Rewarded

T0 = 1_793_613_600_000
MINUTE_MS = 60_000
DEADLINE_MS = T0 + 60 * MINUTE_MS
GRACE_MS = 5 * MINUTE_MS


def bought(person: str, minute: int, amount: str = "10", number: int = 0) -> DealPurchase:
    full = Decimal(amount)
    return DealPurchase(
        credit_id=f"credit-{person}-{number}", conversion_id=f"p-{person}-{number}", person_id=person,
        amount=full, time_ms=T0 + minute * MINUTE_MS,
        weights={"last_touch": Decimal(1)}, revenue={"last_touch": full},
    )


def deal(threshold: int = 3) -> DealState:
    state = DealState("deal-1", "spring")
    state.define("Group buy", Decimal("10"), threshold, DEADLINE_MS)
    return state


def test_purchases_pending_below_threshold() -> None:
    state = deal()
    for person in ("a", "b"):
        assert state.add_purchase(bought(person, 1)) == []

    assert state.evaluate(T0, GRACE_MS, 3) == []
    assert (state.status, len(state.pending), state.revenue) == ("open", 2, Decimal(0))


def test_threshold_activates_once() -> None:
    state = deal()
    for minute, person in enumerate(("a", "b", "c")):
        state.add_purchase(bought(person, minute))

    effects = state.evaluate(T0, GRACE_MS, 3)

    assert len(effects) == 1
    activated = effects[0]
    assert isinstance(activated, Activated)
    assert len(activated.purchases) == 3
    assert activated.activated_ms == T0 + 2 * MINUTE_MS
    assert (state.status, state.purchases, state.revenue, state.pending) == ("active", 3, Decimal(30), [])
    assert state.evaluate(T0 + 10**9, GRACE_MS, 3) == []


def test_activation_time_in_event_order_not_arrival() -> None:
    state = deal()
    for person, minute in (("c", 30), ("a", 5), ("b", 10)):
        state.add_purchase(bought(person, minute))

    effects = state.evaluate(T0, GRACE_MS, 3)

    assert isinstance(effects[0], Activated)
    assert effects[0].activated_ms == T0 + 30 * MINUTE_MS


def test_same_buyer_counts_once() -> None:
    state = deal()
    for number in range(3):
        state.add_purchase(bought("a", number, number=number))

    assert state.evaluate(T0, GRACE_MS, 3) == []
    assert len(state.buyers) == 1


def test_repeated_credit_ignored() -> None:
    state = deal(threshold=1)
    state.add_purchase(bought("a", 1))
    state.evaluate(T0, GRACE_MS, 3)

    assert state.add_purchase(bought("a", 1)) == []
    assert state.purchases == 1


def test_purchase_after_activation_counts_now() -> None:
    state = deal(threshold=1)
    state.add_purchase(bought("a", 1))
    state.evaluate(T0, GRACE_MS, 3)

    counted = state.add_purchase(bought("b", 2))

    assert [purchase.person_id for purchase in counted] == ["b"]
    assert (state.purchases, state.revenue) == (2, Decimal(20))


def test_deadline_plus_grace_expires_with_refunds() -> None:
    state = deal()
    state.add_purchase(bought("a", 1, "12"))
    state.add_purchase(bought("b", 2, "8"))

    assert state.evaluate(DEADLINE_MS + GRACE_MS - 1, GRACE_MS, 3) == []
    effects = state.evaluate(DEADLINE_MS + GRACE_MS, GRACE_MS, 3)

    assert len(effects) == 1
    expired = effects[0]
    assert isinstance(expired, Expired)
    assert sorted(refund.person_id for refund in expired.refunds) == ["a", "b"]
    assert (state.status, state.refunds, state.refunded_amount, state.revenue) == ("expired", 2, Decimal(20), Decimal(0))
    assert state.evaluate(DEADLINE_MS + 10 * GRACE_MS, GRACE_MS, 3) == []


def test_no_clock_never_expires() -> None:
    state = deal()
    state.add_purchase(bought("a", 1, "12"))

    assert state.evaluate(None, GRACE_MS, 3) == []
    assert (state.status, len(state.pending)) == ("open", 1)


def test_purchase_after_expiry_is_refund() -> None:
    state = deal()
    state.evaluate(DEADLINE_MS + GRACE_MS, GRACE_MS, 3)

    assert state.add_purchase(bought("a", 70)) == []
    assert (state.refunds, state.refunded_amount) == (1, Decimal(10))


def test_purchases_after_deadline_do_not_activate() -> None:
    state = deal(threshold=2)
    state.add_purchase(bought("a", 1))
    state.add_purchase(bought("b", 61))

    assert state.evaluate(DEADLINE_MS, GRACE_MS, 3) == []
    assert state.status == "open"


def test_late_arrival_within_grace_activates() -> None:
    state = deal(threshold=2)
    state.add_purchase(bought("a", 1))
    state.evaluate(DEADLINE_MS + GRACE_MS - 1, GRACE_MS, 3)
    state.add_purchase(bought("b", 59))

    effects = state.evaluate(DEADLINE_MS + GRACE_MS, GRACE_MS, 3)

    assert [type(effect) for effect in effects] == [Activated]


def test_undefined_deal_waits_for_definition() -> None:
    state = DealState("deal-1", "spring")
    state.add_purchase(bought("a", 1))

    assert state.evaluate(T0 + 10**10, GRACE_MS, 3) == []
    state.define(None, Decimal(5), 1, DEADLINE_MS)
    assert [type(effect) for effect in state.evaluate(T0, GRACE_MS, 3)] == [Activated]


def test_definition_ignored_once_active() -> None:
    state = deal(threshold=1)
    state.add_purchase(bought("a", 1))
    state.evaluate(T0, GRACE_MS, 3)

    assert not state.define(None, Decimal(99), 50, DEADLINE_MS)
    assert state.price == Decimal(10)


def test_advocate_rewarded_once_after_third_buyer() -> None:
    state = deal(threshold=2)
    state.add_sharer("ann")
    for minute, person in enumerate(("b", "c", "d", "e")):
        state.add_purchase(bought(person, minute))
        state.add_referred_buyer("ann", person, T0 + minute * MINUTE_MS)
        effects = state.evaluate(T0, GRACE_MS, 3)
        rewards = [effect for effect in effects if isinstance(effect, Rewarded)]
        if person == "d":
            assert [(reward.advocate_id, reward.buyers) for reward in rewards] == [("ann", ["b", "c", "d"])]
            assert rewards[0].rewarded_ms == T0 + 2 * MINUTE_MS
        else:
            assert rewards == []
    assert state.reward_cost == Decimal(10)


def test_no_reward_without_share_of_deal() -> None:
    state = deal(threshold=1)
    for minute, person in enumerate(("b", "c", "d")):
        state.add_purchase(bought(person, minute))
        state.add_referred_buyer("ann", person, T0)

    assert not [effect for effect in state.evaluate(T0, GRACE_MS, 3) if isinstance(effect, Rewarded)]


def test_no_reward_before_activation() -> None:
    state = deal(threshold=10)
    state.add_sharer("ann")
    for person in ("b", "c", "d"):
        state.add_purchase(bought(person, 1))
        state.add_referred_buyer("ann", person, T0)

    assert state.evaluate(T0, GRACE_MS, 3) == []


def test_self_purchase_never_counts_for_reward() -> None:
    state = deal(threshold=1)
    state.add_sharer("ann")
    for person in ("ann", "b", "c"):
        state.add_purchase(bought(person, 1))
        state.add_referred_buyer("ann", person, T0)

    assert not [effect for effect in state.evaluate(T0, GRACE_MS, 3) if isinstance(effect, Rewarded)]


def test_deal_json_round_trip() -> None:
    state = deal(threshold=5)
    state.add_sharer("ann")
    state.add_purchase(bought("b", 1, "9.5"))
    state.add_referred_buyer("ann", "b", T0)

    assert DealState.from_json(state.to_json()) == state
