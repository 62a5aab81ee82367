"""Input events: touchpoints, conversions, campaigns, deals, spend and platform counts.

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
#: Social touch kinds that count as engagements in the ROI figures.
ENGAGEMENT_KINDS: tuple[TouchKind, ...] = ("like", "share", "comment", "follow")
#: Upper bound of a count (impressions, followers, buyers): 10^15, like a money amount.
MAX_COUNT = 10**15
Count = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
ReferralCode = Annotated[Id, Field(description="an advocate's referral code, registered by the advocate's share")]


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
    referral_code: ReferralCode | None = None


class SocialTouch(Envelope):
    """A social touchpoint: a view of, or an engagement with, campaign content."""

    type: Literal["touch"] = "touch"
    campaign_id: Id
    channel: Channel
    kind: TouchKind
    referral_code: ReferralCode | None = Field(
        None, description="share only: the code that credits the sharer as advocate; the sharer is the person of the event",
    )
    deal_id: Id | None = Field(None, description="share only: the group-buy deal that was shared")

    @model_validator(mode="after")
    def _share_fields(self) -> "SocialTouch":
        if self.kind != "share":
            for name in ("referral_code", "deal_id"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is only allowed on a share, but kind is {self.kind!r}")
        return self


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
    deal_id: Id | None = Field(None, description="the group-buy deal bought; its campaign gets the whole credit")
    referral_code: ReferralCode | None = None


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
    referral_code: ReferralCode | None = Field(None, description="a sign-up through an advocate's referral code")

    @model_validator(mode="after")
    def _both_ids(self) -> "Identify":
        if self.user_id is None or self.anonymous_id is None:
            raise ValueError("identify needs both user_id and anonymous_id")
        return self


class Deal(StrictModel):
    """A group-buy deal of a campaign: it activates when ``threshold`` people bought it before ``deadline``."""

    type: Literal["deal"] = "deal"
    schema_version: int = Field(1, ge=1, le=1, strict=True)
    deal_id: Id
    campaign_id: Id
    name: ShortText | None = None
    price: Money = Field(description="price of one deal; also the cost of an advocate's free deal")
    currency: Currency
    threshold: int = Field(ge=1, le=MAX_COUNT, strict=True, description="distinct buyers needed to activate the deal")
    deadline: Timestamp = Field(description="event time by which the threshold must be reached")


class Impressions(StrictModel):
    """Impressions of a campaign on one channel over a period, as an ad platform reports them."""

    type: Literal["impressions"] = "impressions"
    schema_version: int = Field(1, ge=1, le=1, strict=True)
    impressions_id: Id = Field(description="a repeated id replaces the earlier report")
    campaign_id: Id
    channel: Channel
    count: Count
    period_start: Timestamp
    period_end: Timestamp

    @model_validator(mode="after")
    def _period_order(self) -> "Impressions":
        if self.period_end <= self.period_start:
            raise ValueError(
                f"period_end {self.period_end.isoformat()} is not after period_start "
                f"{self.period_start.isoformat()}"
            )
        return self


class FollowerSnapshot(StrictModel):
    """The follower count of a campaign's social account on one channel at one moment."""

    type: Literal["follower_snapshot"] = "follower_snapshot"
    schema_version: int = Field(1, ge=1, le=1, strict=True)
    snapshot_id: Id = Field(description="a repeated id replaces the earlier snapshot")
    campaign_id: Id
    channel: Channel
    account_id: Id | None = Field(None, description="the social account; snapshots of each account form their own series")
    followers: Count
    observed_at: Timestamp


Touchpoint = Click | SocialTouch | CheckIn
Conversion = Purchase | CouponRedemption

InputEvent = Annotated[
    Union[
        Click, SocialTouch, CheckIn, Identify, CouponRedemption, Purchase, Campaign, Deal, Spend,
        Impressions, FollowerSnapshot,
    ],
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
    "deal": Deal,
    "spend": Spend,
    "impressions": Impressions,
    "follower_snapshot": FollowerSnapshot,
}

#: Types produced to the touchpoints topic; identify travels with them so it
#: is ordered with the person's touchpoints.
TOUCHPOINT_TYPES = frozenset({"click", "touch", "checkin", "identify"})
CONVERSION_TYPES = frozenset({"purchase", "coupon_redemption"})
#: Definitions, produced to the campaigns topic keyed by campaign id.
DEFINITION_TYPES = frozenset({"campaign", "deal"})
#: Ad-platform figures, produced to the spend topic keyed by campaign id.
PLATFORM_TYPES = frozenset({"spend", "impressions", "follower_snapshot"})
CAMPAIGN_TYPES = DEFINITION_TYPES | PLATFORM_TYPES


def as_utc(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
