"""A seeded, synthetic day of social traffic, and the figures it must produce.

``generate(seed)`` returns wire events for several campaigns on several social
channels. The definitions are campaigns, deals, spend, and hourly impressions
and follower counts. The traffic of one day has views, likes, comments,
follows, shares, clicks, check-ins, coupon redemptions and purchases. Advocates
share with referral codes, and their friends click, sign up and buy. One
group-buy deal activates and one expires. A self-referral, a second advocate's
code for an already referred person, bot likes and repeated events are mixed
in, and the pipeline must reject or drop them.

``ground_truth`` computes, from the events alone and with rules written here
independently of the pipeline, the lifetime engagement, referral and deal
figures that ``roi-updates`` must end with. Nothing here does I/O.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from schemas.events import ENGAGEMENT_KINDS, as_utc

#: People in the crowd of a generated day, unless the caller gives a number.
DEFAULT_PEOPLE = 400

DAY_START = datetime(2026, 11, 16, tzinfo=timezone.utc)
CURRENCY = "EUR"
BOT_USER_AGENT = "facebookexternalhit/1.1"
BROWSER_USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"
#: Buyers an advocate must bring before they get a deal free: the setting's default.
REWARD_MIN_BUYERS = 3
_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    campaign_id: str
    name: str
    channel: str
    margin: str
    spend: str
    coupon_code: str | None
    account_id: str
    #: Mean impressions per hour, and the campaign's share of the day's visitors.
    impressions_per_hour: int
    weight: int


CAMPAIGNS: tuple[CampaignPlan, ...] = (
    CampaignPlan("glow-up", "Glow Up serum", "instagram", "0.45", "900", "GLOW10", "glowlab", 6000, 4),
    CampaignPlan("dance-off", "Dance-off challenge", "tiktok", "0.4", "650", "DANCE5", "glowlab.tt", 9000, 3),
    CampaignPlan("family-deals", "Family group deals", "facebook", "0.3", "500", None, "homehub", 4000, 3),
    CampaignPlan("launch-thread", "Launch thread", "x", "0.5", "300", None, "glowlab.x", 2500, 2),
)
DEAL_CAMPAIGN = "family-deals"


@dataclass(frozen=True, slots=True)
class DealPlan:
    deal_id: str
    name: str
    price: str
    threshold: int
    deadline_hour: int


ACTIVATING_DEAL = DealPlan("sofa-group", "Sofa group buy", "49", 6, 18)
EXPIRING_DEAL = DealPlan("bbq-group", "Barbecue group buy", "29", 12, 14)


@dataclass
class SyntheticDay:
    """The generated events, in the order to produce them."""

    seed: int
    definitions: list[dict[str, Any]]
    traffic: list[dict[str, Any]]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [*self.definitions, *self.traffic]


@dataclass
class _Builder:
    rng: random.Random
    traffic: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0

    def at(self, minute: float) -> str:
        return as_utc(DAY_START + timedelta(seconds=round(minute * 60)))

    def event(self, event_type: str, person: str, minute: float, **fields: Any) -> dict[str, Any]:
        self.counter += 1
        event = {
            "type": event_type, "event_id": f"{event_type}-{self.counter:05d}", "event_time": self.at(minute),
            "user_id": person, "source": "synthetic", "user_agent": BROWSER_USER_AGENT, **fields,
        }
        self.traffic.append(event)
        return event

    def touch(self, person: str, minute: float, plan: CampaignPlan, kind: str, **fields: Any) -> dict[str, Any]:
        return self.event("touch", person, minute, campaign_id=plan.campaign_id, channel=plan.channel, kind=kind, **fields)

    def click(self, person: str, minute: float, plan: CampaignPlan, **fields: Any) -> dict[str, Any]:
        return self.event("click", person, minute, campaign_id=plan.campaign_id, channel=plan.channel, **fields)

    def purchase(self, person: str, minute: float, amount: str, **fields: Any) -> dict[str, Any]:
        self.counter += 1
        order = f"order-{self.counter:05d}"
        return self.event("purchase", person, minute, order_id=order, amount=amount, currency=CURRENCY, **fields)

    def amount(self, low: int, high: int) -> str:
        return f"{self.rng.randint(low * 100, high * 100) / 100:.2f}"


def generate(seed: int, people: int = DEFAULT_PEOPLE) -> SyntheticDay:
    """Generate one synthetic day; the same seed and people count give the same events."""
    if people < 40:
        raise ValueError(f"people is {people}; the day needs at least 40 people for its advocates and deals")
    rng = random.Random(seed)
    builder = _Builder(rng)
    definitions = _definitions(rng)
    plans = {plan.campaign_id: plan for plan in CAMPAIGNS}

    _crowd(builder, people)
    _advocates(builder, plans)
    _deals(builder, plans[DEAL_CAMPAIGN])
    _noise(builder)

    traffic = sorted(builder.traffic, key=lambda event: (event["event_time"], event["event_id"]))
    return SyntheticDay(seed, definitions, traffic)


def _definitions(rng: random.Random) -> list[dict[str, Any]]:
    day_end = DAY_START + timedelta(days=1)
    events: list[dict[str, Any]] = []
    for plan in CAMPAIGNS:
        events.append({
            "type": "campaign", "campaign_id": plan.campaign_id, "name": plan.name, "channel": plan.channel,
            "start": as_utc(DAY_START), "end": as_utc(day_end), "margin": plan.margin,
            **({"coupon_codes": [plan.coupon_code]} if plan.coupon_code else {}),
        })
        events.append({
            "type": "spend", "spend_id": f"{plan.campaign_id}-day", "campaign_id": plan.campaign_id,
            "amount": plan.spend, "currency": CURRENCY, "period_start": as_utc(DAY_START), "period_end": as_utc(day_end),
        })
        followers = rng.randint(2_000, 50_000)
        for hour in range(25):
            moment = DAY_START + timedelta(hours=hour)
            events.append({
                "type": "follower_snapshot", "snapshot_id": f"{plan.campaign_id}-followers-{hour:02d}",
                "campaign_id": plan.campaign_id, "channel": plan.channel, "account_id": plan.account_id,
                "followers": followers, "observed_at": as_utc(moment),
            })
            followers = max(0, followers + rng.randint(-15, 90))
        for hour in range(24):
            start = DAY_START + timedelta(hours=hour)
            daytime = 1.0 if 7 <= hour <= 22 else 0.25
            count = int(plan.impressions_per_hour * daytime * rng.uniform(0.7, 1.3))
            events.append({
                "type": "impressions", "impressions_id": f"{plan.campaign_id}-impressions-{hour:02d}",
                "campaign_id": plan.campaign_id, "channel": plan.channel, "count": count,
                "period_start": as_utc(start), "period_end": as_utc(start + timedelta(hours=1)),
            })
    for deal in (ACTIVATING_DEAL, EXPIRING_DEAL):
        events.append({
            "type": "deal", "deal_id": deal.deal_id, "campaign_id": DEAL_CAMPAIGN, "name": deal.name,
            "price": deal.price, "currency": CURRENCY, "threshold": deal.threshold,
            "deadline": as_utc(DAY_START + timedelta(hours=deal.deadline_hour)),
        })
    return events


def _crowd(builder: _Builder, people: int) -> None:
    """People who see, engage with, click and buy from the campaigns."""
    rng = builder.rng
    weights = [plan.weight for plan in CAMPAIGNS]
    for index in range(people):
        person = f"u{index:04d}"
        interests = set(rng.choices(CAMPAIGNS, weights=weights, k=rng.choice((1, 1, 2))))
        minute = rng.uniform(7 * 60, 21 * 60)
        for plan in sorted(interests, key=lambda plan: plan.campaign_id):
            for _ in range(rng.randint(1, 3)):
                builder.touch(person, minute, plan, "view")
                minute += rng.uniform(1, 20)
            for kind, chance in (("like", 0.4), ("comment", 0.12), ("follow", 0.08), ("share", 0.05)):
                if rng.random() < chance:
                    builder.touch(person, minute, plan, kind)
                    minute += rng.uniform(0.5, 5)
            if rng.random() < 0.35:
                builder.click(person, minute, plan, utm_source=plan.channel, utm_medium="paid_social")
                minute += rng.uniform(1, 30)
                if plan.campaign_id == "glow-up" and rng.random() < 0.2:
                    builder.event("checkin", person, minute, venue_id="store-amsterdam", campaign_id=plan.campaign_id)
                    minute += rng.uniform(5, 30)
                if rng.random() < 0.45:
                    amount = builder.amount(12, 140)
                    if plan.coupon_code and rng.random() < 0.35:
                        bought = builder.purchase(person, minute, amount, coupon_code=plan.coupon_code)
                        builder.event("coupon_redemption", person, minute, coupon_code=plan.coupon_code,
                                      order_id=bought["order_id"], discount="5.00", currency=CURRENCY)
                    else:
                        builder.purchase(person, minute, amount)
                    minute += rng.uniform(10, 60)


def _advocates(builder: _Builder, plans: dict[str, CampaignPlan]) -> None:
    """Advocates share with referral codes; their friends click, sign up and buy."""
    rng = builder.rng
    shared = ("glow-up", "glow-up", "dance-off", "launch-thread", "glow-up", "dance-off")
    for number, campaign_id in enumerate(shared):
        advocate = f"adv{number}"
        plan = plans[campaign_id]
        code = f"REF-{advocate.upper()}"
        share_minute = rng.uniform(8 * 60, 12 * 60)
        builder.touch(advocate, share_minute, plan, "share", referral_code=code)
        if number == 0:
            # The advocate clicks their own link: a self-referral.
            builder.click(advocate, share_minute + 5, plan, referral_code=code)
        for friend_number in range(rng.randint(3, 7)):
            friend = f"f{number}-{friend_number}"
            minute = share_minute + rng.uniform(10, 120)
            if friend_number == 0 and number == 1:
                # A customer who bought before anyone referred them never becomes a new customer.
                builder.purchase(friend, share_minute - 30, builder.amount(20, 80))
            builder.click(friend, minute, plan, referral_code=code)
            minute += rng.uniform(2, 20)
            if rng.random() < 0.4:
                builder.event("identify", friend, minute, anonymous_id=f"anon-{friend}", referral_code=code)
                minute += rng.uniform(1, 10)
            if rng.random() < 0.6:
                with_code = {"referral_code": code} if rng.random() < 0.5 else {}
                builder.purchase(friend, minute + rng.uniform(5, 90), builder.amount(15, 120), **with_code)
            if friend_number == 1 and number == 1:
                # The same friend later follows another advocate's link for the same campaign: a repeat.
                builder.click(friend, minute + 150, plan, referral_code="REF-ADV0")


def _deals(builder: _Builder, plan: CampaignPlan) -> None:
    """Add the purchases of a deal that enough people buy before its deadline, and of one that too few buy."""
    rng = builder.rng
    advocate = "adv-deals"
    code = "REF-SOFA"
    builder.touch(advocate, 9 * 60 + 30, plan, "share", referral_code=code, deal_id=ACTIVATING_DEAL.deal_id)
    for number in range(4):
        friend = f"sofa-friend{number}"
        minute = 10 * 60 + number * 25 + rng.uniform(0, 10)
        builder.click(friend, minute, plan, referral_code=code)
        with_code = {"referral_code": code} if number % 2 else {}
        builder.purchase(friend, minute + 15, ACTIVATING_DEAL.price, deal_id=ACTIVATING_DEAL.deal_id, **with_code)
    for number in range(4):
        buyer = f"sofa-buyer{number}"
        minute = 11 * 60 + number * 50 + rng.uniform(0, 20)
        builder.touch(buyer, minute - 10, plan, "view")
        builder.purchase(buyer, minute, ACTIVATING_DEAL.price, deal_id=ACTIVATING_DEAL.deal_id)
    for number in range(4):
        buyer = f"bbq-buyer{number}"
        minute = 10 * 60 + number * 40 + rng.uniform(0, 20)
        builder.purchase(buyer, minute, EXPIRING_DEAL.price, deal_id=EXPIRING_DEAL.deal_id)
    # Evening engagement moves the deal campaign's event time past the second deal's deadline.
    for number in range(6):
        builder.touch(f"evening{number}", 19 * 60 + number * 15, plan, "like")


def _noise(builder: _Builder) -> None:
    """Bot likes, which are not counted, and events sent twice, which are counted once."""
    rng = builder.rng
    for number in range(5):
        plan = CAMPAIGNS[number % len(CAMPAIGNS)]
        event = builder.touch(f"bot{number}", 8 * 60 + number * 97, plan, "like")
        event["user_agent"] = BOT_USER_AGENT
    candidates = [event for event in builder.traffic if event["type"] in ("touch", "click", "purchase")]
    for event in rng.sample(candidates, k=min(15, len(candidates))):
        builder.traffic.append(dict(event))


# --- ground truth ----------------------------------------------------------------


def ground_truth(day: SyntheticDay, top_advocates: int = 5, reward_min_buyers: int = REWARD_MIN_BUYERS) -> dict[str, Any]:
    """Compute the lifetime engagement, referral and deal figures per campaign, as roi-updates report them."""
    seen: set[str] = set()
    traffic = []
    for event in day.traffic:
        if event["event_id"] in seen:
            continue  # a repeated event counts once
        seen.add(event["event_id"])
        traffic.append(event)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in day.definitions:
        by_type[event["type"]].append(event)

    truth: dict[str, Any] = {}
    for plan in CAMPAIGNS:
        truth[plan.campaign_id] = {"engagement": _engagement_truth(plan.campaign_id, traffic, by_type)}
    referrals, referred_to = _referral_truth(traffic, top_advocates)
    deals = _deal_truth(traffic, by_type["deal"], referred_to, reward_min_buyers)
    for campaign_id, figures in truth.items():
        figures["referrals"] = referrals.get(campaign_id)
        figures["deals"] = deals.get(campaign_id)
        spend = sum((Decimal(event["amount"]) for event in by_type["spend"] if event["campaign_id"] == campaign_id), Decimal(0))
        for deal in figures["deals"] or []:
            spend += Decimal(deal["reward_cost"])
        figures["spend"] = _text(spend)
        engagement = figures["engagement"]
        engagement["cost_per_engagement"] = _ratio(spend, Decimal(engagement["total"]))
    return truth


def _engagement_truth(campaign_id: str, traffic: list[dict[str, Any]], by_type: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    counts = {kind: 0 for kind in ENGAGEMENT_KINDS}
    for event in traffic:
        if (event["type"] == "touch" and event["campaign_id"] == campaign_id and event["kind"] in counts
                and event.get("user_agent") != BOT_USER_AGENT):
            counts[event["kind"]] += 1
    impressions = sum(event["count"] for event in by_type["impressions"] if event["campaign_id"] == campaign_id)
    snapshots = sorted(
        (event["observed_at"], event["followers"]) for event in by_type["follower_snapshot"]
        if event["campaign_id"] == campaign_id
    )
    total = sum(counts.values())
    return {
        "engagements": counts,
        "total": total,
        "impressions": impressions,
        "engagement_rate": _ratio(Decimal(total), Decimal(impressions)),
        "follower_growth": snapshots[-1][1] - snapshots[0][1],
        "followers": snapshots[-1][1],
    }


def _referral_truth(traffic: list[dict[str, Any]], top_advocates: int) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """Replay the referral rules over the traffic in event-time order; also return (campaign, person) -> advocate."""
    owners: dict[str, tuple[str, str]] = {}
    for event in traffic:
        if event["type"] == "touch" and event["kind"] == "share" and event.get("referral_code"):
            owners.setdefault(event["referral_code"], (event["user_id"], event["campaign_id"]))
    referrer: dict[tuple[str, str], str] = {}
    first_purchase: set[str] = set()
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "referred_people": 0, "clicks": 0, "signups": 0, "purchases": 0, "new_customers": 0,
        "revenue": Decimal(0), "self_referrals_rejected": 0, "repeat_referrals_rejected": 0,
        "advocates": defaultdict(lambda: {"referred_people": 0, "new_customers": 0, "revenue": Decimal(0)}),
    })
    action_of = {"click": "clicks", "identify": "signups", "purchase": "purchases"}
    for event in sorted(traffic, key=lambda event: (event["event_time"], event["event_id"])):
        if event["type"] not in action_of:
            continue
        person = event["user_id"]
        code = event.get("referral_code")
        if code is not None and code in owners:
            advocate, campaign_id = owners[code]
            campaign = totals[campaign_id]
            if advocate in (person, event.get("anonymous_id")):
                campaign["self_referrals_rejected"] += 1
            elif referrer.get((campaign_id, person), advocate) != advocate:
                campaign["repeat_referrals_rejected"] += 1
            else:
                if (campaign_id, person) not in referrer:
                    referrer[(campaign_id, person)] = advocate
                    campaign["referred_people"] += 1
                    campaign["advocates"][advocate]["referred_people"] += 1
                campaign[action_of[event["type"]]] += 1
        if event["type"] == "purchase" and person not in first_purchase:
            first_purchase.add(person)
            for (campaign_id, referred), advocate in referrer.items():
                if referred == person:
                    amount = Decimal(event["amount"])
                    campaign = totals[campaign_id]
                    campaign["new_customers"] += 1
                    campaign["revenue"] += amount
                    campaign["advocates"][advocate]["new_customers"] += 1
                    campaign["advocates"][advocate]["revenue"] += amount
    rendered = {}
    for campaign_id, campaign in totals.items():
        ranked = sorted(
            campaign["advocates"].items(),
            key=lambda item: (-item[1]["new_customers"], -item[1]["revenue"], -item[1]["referred_people"], item[0]),
        )
        rendered[campaign_id] = {
            **{name: value for name, value in campaign.items() if name not in ("advocates", "revenue")},
            "revenue": _text(campaign["revenue"]),
            "top_advocates": [
                {"advocate_id": advocate, "referred_people": figures["referred_people"],
                 "new_customers": figures["new_customers"], "revenue": _text(figures["revenue"])}
                for advocate, figures in ranked[:top_advocates]
            ],
        }
    return rendered, referrer


def _deal_truth(
    traffic: list[dict[str, Any]], deals: list[dict[str, Any]], referrer: dict[tuple[str, str], str], reward_min_buyers: int
) -> dict[str, list[dict[str, Any]]]:
    sharers: dict[str, set[str]] = defaultdict(set)
    for event in traffic:
        if event["type"] == "touch" and event["kind"] == "share" and event.get("deal_id"):
            sharers[event["deal_id"]].add(event["user_id"])
    by_campaign: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for deal in sorted(deals, key=lambda deal: deal["deal_id"]):
        purchases = [event for event in traffic if event["type"] == "purchase" and event.get("deal_id") == deal["deal_id"]]
        buyers = {event["user_id"] for event in purchases}
        on_time = {event["user_id"] for event in purchases if event["event_time"] < deal["deadline"]}
        active = len(on_time) >= deal["threshold"]
        amount = sum((Decimal(event["amount"]) for event in purchases), Decimal(0))
        rewards = 0
        if active:
            for advocate in sharers[deal["deal_id"]]:
                referred = {
                    buyer for buyer in buyers
                    if buyer != advocate and referrer.get((deal["campaign_id"], buyer)) == advocate
                }
                rewards += len(referred) >= reward_min_buyers
        by_campaign[deal["campaign_id"]].append({
            "deal_id": deal["deal_id"],
            "status": "active" if active else "expired",
            "buyers": len(buyers),
            "purchases": len(purchases) if active else 0,
            "revenue": _text(amount if active else Decimal(0)),
            "refunds": 0 if active else len(purchases),
            "refunded_amount": _text(Decimal(0) if active else amount),
            "rewards": rewards,
            "reward_cost": _text(Decimal(deal["price"]) * rewards),
        })
    return dict(by_campaign)


def compare(truth: dict[str, Any], updates: dict[str, dict[str, Any]]) -> list[str]:
    """List every figure of the ground truth that the latest lifetime updates per campaign do not match."""
    differences = []
    for campaign_id, expected in sorted(truth.items()):
        update = updates.get(campaign_id)
        if update is None:
            differences.append(f"{campaign_id}: no lifetime update")
            continue
        differences.extend(_differ(f"{campaign_id}.spend", expected["spend"], _number(update.get("spend"))))
        engagement = update.get("engagement") or {}
        for name, value in expected["engagement"].items():
            differences.extend(_differ(f"{campaign_id}.engagement.{name}", value, _number(engagement.get(name))))
        referrals = update.get("referrals")
        differences.extend(_differ(f"{campaign_id}.referrals", expected["referrals"], _number(referrals)))
        deals = {deal["deal_id"]: deal for deal in update.get("deals") or []}
        for deal in expected["deals"] or []:
            found = deals.get(deal["deal_id"], {})
            for name, value in deal.items():
                differences.extend(_differ(f"{campaign_id}.deals.{deal['deal_id']}.{name}", value, _number(found.get(name))))
    return differences


def _differ(name: str, expected: Any, actual: Any) -> list[str]:
    return [] if _number(expected) == actual else [f"{name}: expected {expected!r}, got {actual!r}"]


def _number(value: Any) -> Any:
    """Normalise decimal strings, so '1.50' and '1.5' compare equal."""
    if isinstance(value, dict):
        return {name: _number(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_number(item) for item in value]
    if isinstance(value, str):
        try:
            return Decimal(value).normalize()
        except ArithmeticError:
            return value
    return value


def _ratio(numerator: Decimal, denominator: Decimal) -> str | None:
    return None if denominator <= 0 else _text((numerator / denominator).quantize(_PLACES))


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")
