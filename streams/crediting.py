"""Turn a released conversion and its touchpoints into output messages. Pure."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Sequence

import orjson

from roitrack.attribution import (
    AttributionParams,
    StoredTouch,
    credit_all_models,
    credit_coupon,
    eligible_touches,
    exact,
    revenue_shares,
)
from roitrack.settings import Settings
from schemas.outputs import DEFAULT_MODEL
from streams.records import Outgoing, decimal_text, iso_ms

_SEPARATOR = "\x1f"  # ids cannot contain control characters, so this never collides


@dataclass(slots=True)
class PendingConversion:
    """A conversion waiting for its settle delay, as stored in Redis."""

    member: bytes
    conversion_id: str
    conversion_type: str
    person_id: str
    anonymous_id: str | None
    order_id: str | None
    amount: Decimal
    currency: str
    coupon_code: str | None
    time_ms: int
    arrived_s: float
    deal_id: str | None = None
    #: The deal's campaign, looked up when the purchase was accepted.
    deal_campaign: str | None = None
    referral_code: str | None = None
    #: The campaign of the referral code's share, when it was known as the purchase was accepted.
    referral_campaign: str | None = None


def encode_touch(event_id: str, campaign_id: str, touch_class: str) -> str:
    return f"{event_id}{_SEPARATOR}{campaign_id}{_SEPARATOR}{touch_class}"


def decode_touch(member: bytes, score: float) -> StoredTouch:
    event_id, campaign_id, touch_class = member.decode().split(_SEPARATOR)
    return StoredTouch(event_id, campaign_id, touch_class, int(score))  # type: ignore[arg-type]  # written by encode_touch from a TouchClass


def encode_pending(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def decode_pending(member: bytes, arrived_s: float) -> PendingConversion:
    data = orjson.loads(member)
    return PendingConversion(
        member=member,
        conversion_id=data["id"],
        conversion_type=data["type"],
        person_id=data["person"],
        anonymous_id=data.get("anon"),
        order_id=data.get("order"),
        amount=Decimal(data["amount"]),
        currency=data["currency"],
        coupon_code=data.get("coupon"),
        time_ms=int(data["t"]),
        arrived_s=arrived_s,
        deal_id=data.get("deal"),
        deal_campaign=data.get("dc"),
        referral_code=data.get("ref"),
        referral_campaign=data.get("rc"),
    )


def with_campaigns(
    pending: PendingConversion, deal_campaign: str | None, referral_campaign: str | None
) -> PendingConversion:
    """Return the pending purchase with the campaigns of its deal and referral code stored in its member."""
    if deal_campaign is None and referral_campaign is None:
        return pending
    data = orjson.loads(pending.member)
    if deal_campaign is not None:
        data["dc"] = deal_campaign
    if referral_campaign is not None:
        data["rc"] = referral_campaign
    return decode_pending(encode_pending(data), pending.arrived_s)


def credit_id(person_id: str, conversion_id: str, campaign_id: str) -> str:
    """Identify one conversion's credit to one campaign.

    A SHA-256 of the three ids joined by a control character, which no id may
    contain, so ids that contain ':' cannot collide. The person is part of it
    so that two people's conversions sharing an event id still count twice.
    """
    joined = _SEPARATOR.join((person_id, conversion_id, campaign_id))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


#: Credits packed into one message at most.
MAX_CREDITS_PER_MESSAGE = 500
#: Bytes of credits packed into one message at most. A credit with ids of 128
#: four-byte characters is about 2 KB, and 500 of them would pass the producer's
#: 1,000,000-byte request limit. So a message also closes at this size.
MAX_CREDIT_BYTES_PER_MESSAGE = 900 * 1024


def pack_credits(messages: Sequence[Outgoing], credits_topic: str) -> list[Outgoing]:
    """Pack the credits among ``messages`` into JSON arrays per campaign; keep the other messages first.

    A credit is keyed by its campaign, so the array goes to the same partition
    and keeps the credits' order. The ROI agent then pays Faust's cost per
    message once per array instead of once per credit.
    """
    packed: list[Outgoing] = []
    by_campaign: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if message.topic == credits_topic:
            by_campaign.setdefault(message.key, []).append(message.value)
        else:
            packed.append(message)
    for campaign_id, credits in by_campaign.items():
        # Outgoing.value is a JSON object for the other messages; a list is sent the same way.
        chunk: Any = []
        chunk_bytes = 2  # the brackets
        for credit in credits:
            size = len(orjson.dumps(credit)) + 1  # and its comma
            if chunk and (len(chunk) == MAX_CREDITS_PER_MESSAGE or chunk_bytes + size > MAX_CREDIT_BYTES_PER_MESSAGE):
                packed.append(Outgoing(credits_topic, campaign_id, chunk))
                chunk, chunk_bytes = [], 2
            chunk.append(credit)
            chunk_bytes += size
        packed.append(Outgoing(credits_topic, campaign_id, chunk))
    return packed


# One decimal context for the whole conversion, so the models and the revenue split of
# each model skip the context copy that every outermost ``exact`` call makes.
@exact
def attribute(
    settings: Settings,
    params: AttributionParams,
    pending: PendingConversion,
    touches: list[StoredTouch],
    coupon_campaign: str | None,
) -> list[Outgoing]:
    """Build the Attribution and the per-campaign credits of one conversion.

    The first message is always the Attribution; credits follow, one per
    campaign. An unattributed conversion yields the Attribution alone.
    """
    eligible = eligible_touches(touches, pending.time_ms, params)
    if pending.deal_campaign is not None:
        # A deal belongs to one campaign, and its revenue counts only once the deal is active.
        basis = "deal"
        models = credit_coupon(pending.deal_campaign)
    elif coupon_campaign is not None:
        basis = "coupon"
        models = credit_coupon(coupon_campaign)
    elif pending.referral_campaign is not None:
        # Like a coupon code, an advocate's referral code names the campaign that was shared.
        basis = "referral"
        models = credit_coupon(pending.referral_campaign)
    elif eligible:
        basis = "touchpoints"
        models = credit_all_models(eligible, pending.time_ms, params)
    else:
        basis = "unattributed"
        models = {}

    event_time = iso_ms(pending.time_ms)
    credits_by_model: dict[str, list[dict[str, str]]] = {}
    per_campaign: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: {"weights": {}, "revenue": {}})
    for model, weights in models.items():
        shares = revenue_shares(weights, pending.amount)
        model_credits = credits_by_model[model] = []
        for campaign_id, weight in sorted(weights.items()):
            # Each figure is formatted once, because the Attribution and the credit carry the same text.
            weight_text = decimal_text(weight)
            revenue_text = decimal_text(shares[campaign_id])
            model_credits.append({"campaign_id": campaign_id, "weight": weight_text, "revenue": revenue_text})
            figures = per_campaign[campaign_id]
            figures["weights"][model] = weight_text
            figures["revenue"][model] = revenue_text

    attribution = {
        "type": "attribution",
        "conversion_id": pending.conversion_id,
        "conversion_type": pending.conversion_type,
        "person_id": pending.person_id,
        "order_id": pending.order_id,
        "event_time": event_time,
        "revenue": format(pending.amount, "f"),
        "currency": pending.currency,
        "default_model": DEFAULT_MODEL,
        "basis": basis,
        "credits": credits_by_model,
        "touchpoints": [
            {
                "event_id": touch.event_id,
                "campaign_id": touch.campaign_id,
                "touch_class": touch.touch_class,
                "event_time": iso_ms(touch.time_ms),
            }
            for touch in eligible
        ],
    }
    messages = [Outgoing(settings.topic_attributions, pending.person_id, attribution)]
    for campaign_id, figures in sorted(per_campaign.items()):
        credit: dict[str, Any] = {
            "type": "credit",
            "credit_id": credit_id(pending.person_id, pending.conversion_id, campaign_id),
            "conversion_id": pending.conversion_id,
            "campaign_id": campaign_id,
            "event_time": event_time,
            "weights": figures["weights"],
            "revenue": figures["revenue"],
        }
        if basis == "deal":
            credit["deal_id"] = pending.deal_id
            credit["person_id"] = pending.person_id
        messages.append(Outgoing(settings.topic_credits, campaign_id, credit))
    return messages
