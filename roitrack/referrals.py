"""Word-of-mouth referrals: pure decisions and per-campaign totals, no I/O.

An advocate shares a campaign or deal with a referral code. A later click,
sign-up or purchase that carries the code credits the advocate and the
campaign. The first advocate who refers a person for a campaign keeps that
person: a code of a second advocate for the same person and campaign is
rejected as a repeat, and a code of the person's own is rejected as a
self-referral. A referred person's first purchase makes them a new customer
of each advocate that referred them, whether or not it carries a code.

``resolve_referral`` runs on the referred person's partition, in event-time
order per person. ``ReferralTotals`` sums the decisions on the campaign's
partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from roitrack.attribution import exact

Action = Literal["click", "signup", "purchase"]
Outcome = Literal["credited", "self", "repeat"]
ACTIONS: tuple[Action, ...] = ("click", "signup", "purchase")
_ZERO = Decimal(0)
#: Field of the person's referral hash that contains their first purchase.
FIRST_PURCHASE_FIELD = "first"
#: Prefix of the person's referral hash fields that hold the advocate per campaign.
REFERRER_PREFIX = "c:"


@dataclass(frozen=True, slots=True)
class ReferralItem:
    """A click, sign-up or purchase waiting for its referral to be decided."""

    item_id: str
    action: Action
    person_id: str
    anonymous_id: str | None
    code: str | None
    time_ms: int
    amount: Decimal = _ZERO
    deal_id: str | None = None
    deal_campaign: str | None = None


@dataclass(frozen=True, slots=True)
class CodeOwner:
    """The advocate, campaign and deal that a referral code's first share registered."""

    advocate_id: str
    campaign_id: str
    deal_id: str | None = None


@dataclass(slots=True)
class PersonReferrals:
    """A referred person's stored facts: the advocate per campaign and the first purchase."""

    referrers: dict[str, str] = field(default_factory=dict)
    first_purchase: str | None = None

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "PersonReferrals":
        referrers = {
            name[len(REFERRER_PREFIX):]: advocate
            for name, advocate in fields.items()
            if name.startswith(REFERRER_PREFIX)
        }
        return cls(referrers, fields.get(FIRST_PURCHASE_FIELD))


@dataclass(frozen=True, slots=True)
class ReferralDecision:
    """One referral outcome for one campaign and advocate."""

    item_id: str
    campaign_id: str
    advocate_id: str
    person_id: str
    action: Action
    with_code: bool
    outcome: Outcome
    new_person: bool
    new_customer: bool
    revenue: Decimal
    deal_id: str | None
    time_ms: int


def resolve_referral(
    item: ReferralItem, owner: CodeOwner | None, person: PersonReferrals
) -> tuple[list[ReferralDecision], dict[str, str]]:
    """Decide the referrals of one item and update ``person`` in place.

    ``owner`` is the owner of the item's code, or None when the item carries no
    code or the code is unknown. Returns the decisions, and the fields to add
    to the person's hash: ``c:<campaign>`` for a new referrer and ``first`` for
    a first purchase. Call it for one person's items in event-time order.
    """
    decisions: dict[tuple[str, str], ReferralDecision] = {}
    writes: dict[str, str] = {}

    def decide(campaign_id: str, advocate_id: str, **values: Any) -> None:
        known = decisions.get((campaign_id, advocate_id))
        if known is None:
            known = ReferralDecision(
                item.item_id, campaign_id, advocate_id, item.person_id, item.action, with_code=False,
                outcome="credited", new_person=False, new_customer=False, revenue=_ZERO, deal_id=None,
                time_ms=item.time_ms,
            )
        decisions[(campaign_id, advocate_id)] = replace(known, **values)

    if owner is not None:
        campaign_id, advocate_id = owner.campaign_id, owner.advocate_id
        current = person.referrers.get(campaign_id)
        if advocate_id in (item.person_id, item.anonymous_id):
            decide(campaign_id, advocate_id, with_code=True, outcome="self")
        elif current is not None and current != advocate_id:
            decide(campaign_id, advocate_id, with_code=True, outcome="repeat")
        else:
            if current is None:
                person.referrers[campaign_id] = advocate_id
                writes[REFERRER_PREFIX + campaign_id] = advocate_id
            decide(campaign_id, advocate_id, with_code=True, new_person=current is None)

    if item.action == "purchase":
        first = person.first_purchase in (None, item.item_id)
        if person.first_purchase is None:
            person.first_purchase = item.item_id
            writes[FIRST_PURCHASE_FIELD] = item.item_id
        for campaign_id, advocate_id in sorted(person.referrers.items()):
            bought_deal = item.deal_id if item.deal_id is not None and item.deal_campaign == campaign_id else None
            if first or bought_deal is not None:
                decide(
                    campaign_id, advocate_id,
                    new_customer=first, revenue=item.amount if first else _ZERO, deal_id=bought_deal,
                )
    return list(decisions.values()), writes


@dataclass(slots=True)
class AdvocateTotals:
    """One advocate's referrals for one campaign."""

    referred_people: int = 0
    new_customers: int = 0
    revenue: Decimal = _ZERO


@dataclass(slots=True)
class ReferralTotals:
    """A campaign's referral figures, summed from decisions on its partition."""

    referred_people: int = 0
    actions: dict[str, int] = field(default_factory=lambda: {action: 0 for action in ACTIONS})
    new_customers: int = 0
    revenue: Decimal = _ZERO
    self_rejected: int = 0
    repeat_rejected: int = 0
    advocates: dict[str, AdvocateTotals] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.advocates and not self.self_rejected and not self.repeat_rejected

    @exact
    def apply(self, advocate_id: str, action: str, with_code: bool, outcome: str,
              new_person: bool, new_customer: bool, revenue: Decimal) -> None:
        """Add one decision."""
        if outcome == "self":
            self.self_rejected += 1
            return
        if outcome == "repeat":
            self.repeat_rejected += 1
            return
        advocate = self.advocates.setdefault(advocate_id, AdvocateTotals())
        if with_code:
            self.actions[action] += 1
        if new_person:
            self.referred_people += 1
            advocate.referred_people += 1
        if new_customer:
            self.new_customers += 1
            self.revenue += revenue
            advocate.new_customers += 1
            advocate.revenue += revenue

    def top_advocates(self, count: int) -> list[tuple[str, AdvocateTotals]]:
        """Return the best advocates: most new customers, then revenue, then referred people, then id."""
        ranked = sorted(
            self.advocates.items(),
            key=lambda item: (-item[1].new_customers, -item[1].revenue, -item[1].referred_people, item[0]),
        )
        return ranked[:count]

    def to_json(self) -> dict[str, Any]:
        return {
            "people": self.referred_people,
            "actions": {action: count for action, count in self.actions.items() if count},
            "customers": self.new_customers,
            "revenue": str(self.revenue),
            "self": self.self_rejected,
            "repeat": self.repeat_rejected,
            "advocates": {
                advocate_id: [totals.referred_people, totals.new_customers, str(totals.revenue)]
                for advocate_id, totals in self.advocates.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ReferralTotals":
        totals = cls(
            referred_people=int(data.get("people", 0)),
            new_customers=int(data.get("customers", 0)),
            revenue=Decimal(data.get("revenue", "0")),
            self_rejected=int(data.get("self", 0)),
            repeat_rejected=int(data.get("repeat", 0)),
        )
        for action, count in data.get("actions", {}).items():
            totals.actions[action] = int(count)
        totals.advocates = {
            advocate_id: AdvocateTotals(int(people), int(customers), Decimal(revenue))
            for advocate_id, (people, customers, revenue) in data.get("advocates", {}).items()
        }
        return totals
