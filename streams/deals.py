"""Deal events: turn the effects of ``roitrack.deals.DealState.evaluate`` into messages and ROI changes.

Every deal event goes to the deal-events topic keyed by campaign id, before
the fenced write of the batch that caused it. Its ``event_id`` is a hash of
the event type, the deal id and the advocate id, so an event sent again after
a crash carries the same id and consumers drop the repeat.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from roitrack.deals import Activated, DealPurchase, DealState, Effect, Expired, Rewarded
from roitrack.roi import CampaignAggregate, SpendRecord
from streams.facts import hashed_id
from streams.records import Outgoing, decimal_text, iso_ms, utc_now

#: Prefix of the spend id under which an advocate's free deal counts as campaign spend.
REWARD_SPEND_PREFIX = "reward\x1f"


def deal_event_id(event_type: str, deal_id: str, advocate_id: str = "") -> str:
    return hashed_id(event_type, deal_id, advocate_id)


def _money(value: Decimal) -> str:
    return decimal_text(value)


def _now_text() -> str:
    return utc_now().isoformat().replace("+00:00", "Z")


def apply_effects(
    topic: str,
    currency: str,
    deal: DealState,
    effects: list[Effect],
    aggregate: CampaignAggregate,
    windows_s: tuple[int, ...],
) -> list[Outgoing]:
    """Apply a deal's effects to its campaign's aggregate and return the deal events to send."""
    messages = []
    for effect in effects:
        if isinstance(effect, Activated):
            count_purchases(aggregate, effect.purchases, windows_s)
            messages.append(Outgoing(topic, deal.campaign_id, activated_event(deal, effect, currency)))
        elif isinstance(effect, Expired):
            messages.append(Outgoing(topic, deal.campaign_id, expired_event(deal, effect, currency)))
        else:
            price = deal.price if deal.price is not None else Decimal(0)
            # A reward is spent at one moment: a one-millisecond spend period.
            aggregate.set_spend(
                f"{REWARD_SPEND_PREFIX}{deal.deal_id}\x1f{effect.advocate_id}",
                SpendRecord(price, effect.rewarded_ms, effect.rewarded_ms + 1),
            )
            messages.append(Outgoing(topic, deal.campaign_id, reward_event(deal, effect, price, currency)))
    return messages


def count_purchases(aggregate: CampaignAggregate, purchases: list[DealPurchase], windows_s: tuple[int, ...]) -> None:
    """Add deal purchases to the campaign's conversions and revenue, each at its own event time."""
    for purchase in purchases:
        aggregate.add_credit(purchase.time_ms, purchase.weights, purchase.revenue, windows_s)  # type: ignore[arg-type]  # keys are attribution models, checked when the credit was read


def activated_event(deal: DealState, effect: Activated, currency: str) -> dict[str, Any]:
    return {
        "type": "deal_activated",
        "event_id": deal_event_id("deal_activated", deal.deal_id),
        "deal_id": deal.deal_id,
        "campaign_id": deal.campaign_id,
        "threshold": deal.threshold,
        "buyers": effect.buyers,
        "purchases": len(effect.purchases),
        "revenue": _money(sum((purchase.amount for purchase in effect.purchases), Decimal(0))),
        "currency": currency,
        "activated_at": iso_ms(effect.activated_ms),
        "emitted_at": _now_text(),
    }


def expired_event(deal: DealState, effect: Expired, currency: str) -> dict[str, Any]:
    return {
        "type": "deal_expired",
        "event_id": deal_event_id("deal_expired", deal.deal_id),
        "deal_id": deal.deal_id,
        "campaign_id": deal.campaign_id,
        "threshold": deal.threshold,
        "buyers": effect.buyers,
        "deadline": iso_ms(deal.deadline_ms or 0),
        "refunds": [
            {
                "conversion_id": refund.conversion_id,
                "person_id": refund.person_id,
                "amount": _money(refund.amount),
                "event_time": iso_ms(refund.time_ms),
            }
            for refund in sorted(effect.refunds, key=lambda refund: (refund.time_ms, refund.conversion_id))
        ],
        "refunded_amount": _money(sum((refund.amount for refund in effect.refunds), Decimal(0))),
        "currency": currency,
        "expired_at": iso_ms(effect.expired_ms),
        "emitted_at": _now_text(),
    }


def reward_event(deal: DealState, effect: Rewarded, price: Decimal, currency: str) -> dict[str, Any]:
    return {
        "type": "advocate_reward",
        "event_id": deal_event_id("advocate_reward", deal.deal_id, effect.advocate_id),
        "deal_id": deal.deal_id,
        "campaign_id": deal.campaign_id,
        "advocate_id": effect.advocate_id,
        "referred_buyers": effect.buyers,
        "reward": _money(price),
        "currency": currency,
        "rewarded_at": iso_ms(effect.rewarded_ms),
        "emitted_at": _now_text(),
    }


def deal_figures(deal: DealState) -> dict[str, Any]:
    """Render one defined deal for the lifetime RoiUpdate."""
    return {
        "deal_id": deal.deal_id,
        "name": deal.name,
        "status": deal.status,
        "price": _money(deal.price or Decimal(0)),
        "threshold": deal.threshold,
        "deadline": iso_ms(deal.deadline_ms or 0),
        "buyers": len(deal.buyers),
        "pending_purchases": len(deal.pending),
        "pending_amount": _money(deal.pending_amount),
        "purchases": deal.purchases,
        "revenue": _money(deal.revenue),
        "refunds": deal.refunds,
        "refunded_amount": _money(deal.refunded_amount),
        "rewards": len(deal.rewarded),
        "reward_cost": _money(deal.reward_cost),
    }
