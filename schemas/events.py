"""Input events: touchpoints, conversions, campaigns and spend.

Each model has a ``type`` literal, so one message can carry any of them and
``schemas.decode`` picks the model from that field.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from schemas.common import Currency, Envelope, Id, LongText, Money, Ratio, ShortText, StrictModel, Timestamp

Channel = Annotated[str, Field(min_length=1, max_length=64)]
TouchKind = Literal["view", "like", "share", "comment", "follow"]


class Click(Envelope):
    """A click on a tracked link or ad, usually from the tracking pixel."""

    type: Literal["click"] = "click"
    campaign_id: Id
    channel: Channel
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None
    utm_campaign: ShortText | None = None
    utm_term: ShortText | None = None
    utm_content: ShortText | None = None
    landing_url: LongText | None = None


class SocialTouch(Envelope):
    """A social touchpoint: a view of, or an engagement with, campaign content."""

    type: Literal["touch"] = "touch"
    campaign_id: Id
    channel: Channel
    kind: TouchKind


class CheckIn(Envelope):
    """A check-in at a venue from the mobile app."""

    type: Literal["checkin"] = "checkin"
    venue_id: Id
    campaign_id: Id | None = None
    deal_id: Id | None = None


class CouponRedemption(Envelope):
    """A redeemed coupon; its code maps to a campaign."""

    type: Literal["coupon_redemption"] = "coupon_redemption"
    coupon_code: Id
    order_id: Id | None = None
    discount: Money = Decimal("0")
    currency: Currency | None = None

    @model_validator(mode="after")
    def _currency_with_discount(self) -> "CouponRedemption":
        if self.discount and self.currency is None:
            raise ValueError("currency is required when discount is above 0")
        return self


class Purchase(Envelope):
    """A completed order."""

    type: Literal["purchase"] = "purchase"
    order_id: Id
    amount: Money
    currency: Currency
    coupon_code: Id | None = None


class Campaign(StrictModel):
    """A campaign definition; coupon codes listed here credit the campaign."""

    type: Literal["campaign"] = "campaign"
    schema_version: int = Field(1, ge=1, le=1, strict=True)
    campaign_id: Id
    name: ShortText
    channel: Channel
    start: Timestamp
    end: Timestamp | None = None
    margin: Ratio
    coupon_codes: tuple[Id, ...] = ()

    @model_validator(mode="after")
    def _end_after_start(self) -> "Campaign":
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self


class Spend(StrictModel):
    """Money spent on a campaign over a period, spread evenly over that period."""

    type: Literal["spend"] = "spend"
    schema_version: int = Field(1, ge=1, le=1, strict=True)
    spend_id: Id
    campaign_id: Id
    amount: Money
    currency: Currency
    period_start: Timestamp
    period_end: Timestamp

    @model_validator(mode="after")
    def _period_order(self) -> "Spend":
        if self.period_end <= self.period_start:
            raise ValueError(
                f"period_end {self.period_end.isoformat()} is not after period_start "
                f"{self.period_start.isoformat()}"
            )
        return self


class Identify(Envelope):
    """Links an anonymous id to a user id, for example at login or sign-up."""

    type: Literal["identify"] = "identify"

    @model_validator(mode="after")
    def _both_ids(self) -> "Identify":
        if self.user_id is None or self.anonymous_id is None:
            raise ValueError("identify needs both user_id and anonymous_id")
        return self


Touchpoint = Click | SocialTouch | CheckIn
Conversion = Purchase | CouponRedemption

InputEvent = Annotated[
    Union[Click, SocialTouch, CheckIn, Identify, CouponRedemption, Purchase, Campaign, Spend],
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[StrictModel]] = {
    "click": Click,
    "touch": SocialTouch,
    "checkin": CheckIn,
    "identify": Identify,
    "coupon_redemption": CouponRedemption,
    "purchase": Purchase,
    "campaign": Campaign,
    "spend": Spend,
}

#: Types produced to the touchpoints topic; identify travels with them so it
#: is ordered with the person's touchpoints.
TOUCHPOINT_TYPES = frozenset({"click", "touch", "checkin", "identify"})
CONVERSION_TYPES = frozenset({"purchase", "coupon_redemption"})
CAMPAIGN_TYPES = frozenset({"campaign", "spend"})


def as_utc(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
