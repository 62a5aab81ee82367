"""Group-buy deals: a pure state machine, no I/O.

A deal has a price, a buyer threshold and a deadline. Its purchases are
pending until enough distinct people bought it before the deadline. Then the
deal activates once, and its pending and later purchases count as revenue.
When the event time that every person partition has reached passes the
deadline plus a grace period first, the deal expires once and its pending and later purchases
are refunds. An advocate who shared an active deal gets it free once a given
number of the people they referred bought it.

The deadline is compared with event time, never with the wall clock, so a
replay of the same input decides the same way. ``DealState.evaluate`` returns
what happened as effects, which the caller publishes and applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from roitrack.attribution import exact

DealStatus = Literal["open", "active", "expired"]
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class DealPurchase:
    """A purchase of a deal, with the credit that counts it once the deal is active."""

    credit_id: str
    conversion_id: str
    person_id: str
    amount: Decimal
    time_ms: int
    weights: dict[str, Decimal]
    revenue: dict[str, Decimal]

    def to_json(self) -> list[Any]:
        return [
            self.credit_id, self.conversion_id, self.person_id, str(self.amount), self.time_ms,
            {model: str(value) for model, value in self.weights.items()},
            {model: str(value) for model, value in self.revenue.items()},
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> "DealPurchase":
        credit_id, conversion_id, person_id, amount, time_ms, weights, revenue = data
        return cls(
            credit_id, conversion_id, person_id, Decimal(amount), int(time_ms),
            {model: Decimal(value) for model, value in weights.items()},
            {model: Decimal(value) for model, value in revenue.items()},
        )


@dataclass(frozen=True, slots=True)
class Activated:
    """The deal reached its threshold; ``purchases`` now count as revenue."""

    buyers: int
    purchases: list[DealPurchase]
    activated_ms: int


@dataclass(frozen=True, slots=True)
class Expired:
    """The deal passed its deadline below its threshold; ``refunds`` are paid back."""

    buyers: int
    refunds: list[DealPurchase]
    expired_ms: int


@dataclass(frozen=True, slots=True)
class Rewarded:
    """An advocate gets the deal free; the price counts as campaign spend."""

    advocate_id: str
    buyers: list[str]
    rewarded_ms: int


Effect = Activated | Expired | Rewarded


@dataclass(slots=True)
class DealState:
    """One deal on its campaign's partition."""

    deal_id: str
    campaign_id: str
    name: str | None = None
    price: Decimal | None = None
    threshold: int | None = None
    deadline_ms: int | None = None
    status: DealStatus = "open"
    #: person -> event time of their earliest purchase of the deal
    buyers: dict[str, int] = field(default_factory=dict)
    pending: list[DealPurchase] = field(default_factory=list)
    credit_ids: set[str] = field(default_factory=set)
    purchases: int = 0
    revenue: Decimal = _ZERO
    refunds: int = 0
    refunded_amount: Decimal = _ZERO
    sharers: set[str] = field(default_factory=set)
    #: advocate -> referred buyer -> event time of the referred purchase
    referred: dict[str, dict[str, int]] = field(default_factory=dict)
    #: advocate -> event time at which the reward was earned
    rewarded: dict[str, int] = field(default_factory=dict)
    activated_ms: int | None = None
    expired_ms: int | None = None

    @property
    def defined(self) -> bool:
        return self.price is not None and self.threshold is not None and self.deadline_ms is not None

    def define(self, name: str | None, price: Decimal, threshold: int, deadline_ms: int) -> bool:
        """Set the terms; return False, changing nothing, once the deal is active or expired."""
        if self.status != "open":
            return False
        self.name, self.price, self.threshold, self.deadline_ms = name, price, threshold, deadline_ms
        return True

    @exact
    def add_purchase(self, purchase: DealPurchase) -> list[DealPurchase]:
        """Add a purchase; return the purchases that count as revenue now (none unless active).

        A repeated credit id is ignored.
        """
        if purchase.credit_id in self.credit_ids:
            return []
        self.credit_ids.add(purchase.credit_id)
        known = self.buyers.get(purchase.person_id)
        if known is None or purchase.time_ms < known:
            self.buyers[purchase.person_id] = purchase.time_ms
        if self.status == "active":
            self.purchases += 1
            self.revenue += purchase.amount
            return [purchase]
        if self.status == "expired":
            self.refunds += 1
            self.refunded_amount += purchase.amount
            return []
        self.pending.append(purchase)
        return []

    def add_sharer(self, advocate_id: str) -> None:
        self.sharers.add(advocate_id)

    def add_referred_buyer(self, advocate_id: str, buyer_id: str, time_ms: int) -> None:
        if advocate_id == buyer_id:
            return
        bought = self.referred.setdefault(advocate_id, {})
        known = bought.get(buyer_id)
        if known is None or time_ms < known:
            bought[buyer_id] = time_ms

    def buyers_before_deadline(self) -> list[int]:
        """Return the earliest purchase time of each buyer who bought before the deadline, sorted."""
        if self.deadline_ms is None:
            return []
        return sorted(time_ms for time_ms in self.buyers.values() if time_ms < self.deadline_ms)

    @exact
    def evaluate(self, clock_ms: int | None, grace_ms: int, reward_min_buyers: int) -> list[Effect]:
        """Activate, expire and reward as the state allows, each at most once.

        ``clock_ms`` is the event time up to which every purchase has arrived. The
        deal expires once it passes the deadline plus ``grace_ms``, and never while
        it is None.
        """
        effects: list[Effect] = []
        if self.status == "open" and self.defined:
            assert self.threshold is not None and self.deadline_ms is not None  # narrowed by defined
            counted = self.buyers_before_deadline()
            if len(counted) >= self.threshold:
                self.status = "active"
                # The threshold-th buyer in event-time order crossed it, whatever the arrival order.
                self.activated_ms = counted[self.threshold - 1]
                purchases, self.pending = self.pending, []
                self.purchases += len(purchases)
                self.revenue += sum((purchase.amount for purchase in purchases), _ZERO)
                effects.append(Activated(len(self.buyers), purchases, self.activated_ms))
            elif clock_ms is not None and clock_ms >= self.deadline_ms + grace_ms:
                self.status = "expired"
                self.expired_ms = clock_ms
                refunds, self.pending = self.pending, []
                self.refunds += len(refunds)
                self.refunded_amount += sum((purchase.amount for purchase in refunds), _ZERO)
                effects.append(Expired(len(self.buyers), refunds, clock_ms))
        if self.status == "active":
            assert self.activated_ms is not None  # set on activation
            for advocate_id in sorted(self.referred):
                if advocate_id in self.rewarded or advocate_id not in self.sharers:
                    continue
                bought = sorted(self.referred[advocate_id].items(), key=lambda item: (item[1], item[0]))
                if len(bought) < reward_min_buyers:
                    continue
                earned_ms = max(self.activated_ms, bought[reward_min_buyers - 1][1])
                self.rewarded[advocate_id] = earned_ms
                effects.append(Rewarded(advocate_id, [buyer for buyer, _ in bought[:reward_min_buyers]], earned_ms))
        return effects

    @property
    def reward_cost(self) -> Decimal:
        return (self.price or _ZERO) * len(self.rewarded)

    @property
    def pending_amount(self) -> Decimal:
        return sum((purchase.amount for purchase in self.pending), _ZERO)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.deal_id,
            "campaign": self.campaign_id,
            "name": self.name,
            "price": None if self.price is None else str(self.price),
            "threshold": self.threshold,
            "deadline": self.deadline_ms,
            "status": self.status,
            "buyers": self.buyers,
            "pending": [purchase.to_json() for purchase in self.pending],
            "credits": sorted(self.credit_ids),
            "purchases": self.purchases,
            "revenue": str(self.revenue),
            "refunds": self.refunds,
            "refunded": str(self.refunded_amount),
            "sharers": sorted(self.sharers),
            "referred": self.referred,
            "rewarded": self.rewarded,
            "activated": self.activated_ms,
            "expired": self.expired_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DealState":
        return cls(
            deal_id=data["id"],
            campaign_id=data["campaign"],
            name=data.get("name"),
            price=None if data.get("price") is None else Decimal(data["price"]),
            threshold=data.get("threshold"),
            deadline_ms=data.get("deadline"),
            status=data.get("status", "open"),
            buyers={person: int(time_ms) for person, time_ms in data.get("buyers", {}).items()},
            pending=[DealPurchase.from_json(item) for item in data.get("pending", [])],
            credit_ids=set(data.get("credits", [])),
            purchases=int(data.get("purchases", 0)),
            revenue=Decimal(data.get("revenue", "0")),
            refunds=int(data.get("refunds", 0)),
            refunded_amount=Decimal(data.get("refunded", "0")),
            sharers=set(data.get("sharers", [])),
            referred={
                advocate: {buyer: int(time_ms) for buyer, time_ms in bought.items()}
                for advocate, bought in data.get("referred", {}).items()
            },
            rewarded={advocate: int(time_ms) for advocate, time_ms in data.get("rewarded", {}).items()},
            activated_ms=data.get("activated"),
            expired_ms=data.get("expired"),
        )
