"""Output records: attributions, ROI updates, credits, social facts, deal events and dead letters."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, PlainSerializer

from schemas.common import Currency, Id, Money, StrictModel

AttributionModel = Literal["last_touch", "first_touch", "linear", "time_decay", "position_based"]
ATTRIBUTION_MODELS: tuple[AttributionModel, ...] = (
    "last_touch",
    "first_touch",
    "linear",
    "time_decay",
    "position_based",
)
DEFAULT_MODEL: AttributionModel = "last_touch"


#: Integer digits accepted in an Amount. A ratio of two money amounts (15 integer and
#: 12 fraction digits each) has at most 28. ROI and ROAS divide window sums, so no
#: exact bound exists, and 30 leaves room for those sums.
AMOUNT_MAX_INTEGER_DIGITS = 30
#: Fraction digits accepted in an Amount. The ROI agent's figures have at most 60
#: significant digits (its DECIMAL_CONTEXT), so only one below 1e-40 could have more.
#: With both limits, an accepted figure's plain text (as JSON writes it) stays short.
AMOUNT_MAX_FRACTION_DIGITS = 100
_PREVIEW_CHARS = 40


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."


def _decimal_from_text(value: object) -> object:
    """Parse decimal text and check its digits; raise ValueError, which pydantic reports as a field error."""
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"must be a decimal string such as \"-0.25\", got {_preview(value)}") from None
        # Checked here too, so that the message shows the text as sent, not its normalised form.
        return _check_digits(number, original=value)
    return value


def _check_digits(value: Decimal, original: object) -> Decimal:
    if not value.is_finite():
        return value  # pydantic's finite_number check names the value
    if value and value.adjusted() >= AMOUNT_MAX_INTEGER_DIGITS:
        raise ValueError(f"has more than {AMOUNT_MAX_INTEGER_DIGITS} integer digits: {_preview(original)}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -AMOUNT_MAX_FRACTION_DIGITS:
        raise ValueError(f"has more than {AMOUNT_MAX_FRACTION_DIGITS} fraction digits: {_preview(original)}")
    return value


def check_amount_range(value: Decimal) -> Decimal:
    """Reject a decimal with more integer or fraction digits than an Amount allows.

    A figure such as 1e999999 makes rounding to cents in the default decimal
    context raise ``decimal.InvalidOperation``, and its plain text runs to a megabyte.
    """
    return _check_digits(value, original=str(value))


Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_text),
    AfterValidator(check_amount_range),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
]
"""A decimal that may be negative (ROI) or fractional (linear conversions); JSON string.

At most AMOUNT_MAX_INTEGER_DIGITS integer and AMOUNT_MAX_FRACTION_DIGITS fraction digits.
"""


class TouchpointRef(StrictModel):
    """A touchpoint that an attribution used."""

    event_id: Id
    campaign_id: Id
    touch_class: Literal["click", "engagement", "checkin", "view"]
    event_time: AwareDatetime


class Credit(StrictModel):
    """One campaign's share of a conversion under one model."""

    campaign_id: Id
    weight: Amount
    revenue: Amount


class Attribution(StrictModel):
    """The credit of one conversion to campaigns, under every model."""

    type: Literal["attribution"] = "attribution"
    conversion_id: Id
    conversion_type: Literal["purchase", "coupon_redemption"]
    person_id: Id
    order_id: Id | None
    event_time: AwareDatetime
    revenue: Money
    currency: Currency
    default_model: AttributionModel
    basis: Literal["coupon", "deal", "referral", "touchpoints", "unattributed"] = Field(
        description=(
            "coupon, deal or referral: the whole conversion goes to the campaign of its deal, coupon code "
            "or referral code, in that order of precedence"
        ),
    )
    credits: dict[AttributionModel, list[Credit]]
    touchpoints: list[TouchpointRef]


class CampaignCredit(StrictModel):
    """A conversion's credit to one campaign under every model: the ROI agent's input."""

    type: Literal["credit"] = "credit"
    credit_id: str = Field(
        min_length=1, max_length=3 * 128 + 2,
        description="SHA-256 hex of the person, conversion and campaign ids; repeated credits are dropped by it",
    )
    conversion_id: Id
    campaign_id: Id
    event_time: AwareDatetime
    weights: dict[AttributionModel, Amount]
    revenue: dict[AttributionModel, Amount]
    deal_id: Id | None = Field(
        None, description="set on the credit of a deal purchase, which counts only once the deal is active",
    )
    person_id: Id | None = Field(None, description="the buyer; set on the credit of a deal purchase")


EngagementKind = Literal["like", "share", "comment", "follow"]
FactId = Annotated[str, Field(
    min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$",
    description="SHA-256 hex of the source event's ids; repeated facts are dropped by it",
)]


class EngagementFact(StrictModel):
    """An engagement, forwarded from its person partition to its campaign's partition on the credits topic."""

    type: Literal["engagement"] = "engagement"
    fact_id: FactId
    campaign_id: Id
    channel: Annotated[str, Field(min_length=1, max_length=64)]
    kind: EngagementKind
    event_time: AwareDatetime
    advocate_id: Id | None = Field(None, description="the sharer of a deal; set on a share with a deal_id")
    deal_id: Id | None = None


class ReferralFact(StrictModel):
    """A referral decided on the referred person's partition, forwarded to the campaign's partition."""

    type: Literal["referral"] = "referral"
    fact_id: FactId
    campaign_id: Id
    advocate_id: Id
    person_id: Id = Field(description="the referred person")
    action: Literal["click", "signup", "purchase"]
    with_code: bool = Field(description="the event carried the advocate's referral code")
    outcome: Literal["credited", "self", "repeat"] = Field(
        description="self: the advocate referred themselves; repeat: the person was referred by another advocate first",
    )
    new_person: bool = Field(description="the first credited referral of this person for this campaign")
    new_customer: bool = Field(description="the person's first purchase, landed through this advocate")
    revenue: Amount = Field(description="amount of the first purchase when new_customer, else 0")
    deal_id: Id | None = Field(None, description="the deal bought, on a purchase of a deal")
    event_time: AwareDatetime


class ModelFigures(StrictModel):
    """A campaign's figures under one attribution model, in one window."""

    conversions: Amount = Field(description="attributed conversions; fractional under the linear, time-decay and "
                                            "position-based models")
    revenue: Amount = Field(description="attributed revenue, rounded half to even to 6 decimal places")
    roi: Amount | None = Field(description="(revenue x margin - spend) / spend; null when spend is 0")
    roas: Amount | None = Field(description="revenue / spend; null when spend is 0")
    cpa: Amount | None = Field(description="spend / conversions; null when there are no conversions")


class RoiUpdate(StrictModel):
    """A campaign's rolling ROI in one window, emitted when its figures change."""

    type: Literal["roi_update"] = "roi_update"
    campaign_id: Id
    campaign_name: str | None
    window: str = Field(description="'1h', '24h', '7d' style label, or 'lifetime'")
    window_s: int | None = Field(description="window length in seconds; null for lifetime")
    window_end: AwareDatetime | None = Field(description="event-time end of the window")
    sequence: int = Field(ge=1, description="per-campaign, increases with each emission; drop lower or equal ones")
    currency: Currency
    margin: Amount | None
    spend: Amount = Field(description="spend in the window, rounded half to even to 6 decimal places; ROI, ROAS and "
                                      "CPA come from the unrounded figures")
    default_model: AttributionModel
    roi: Amount | None
    roas: Amount | None
    cpa: Amount | None
    models: dict[AttributionModel, ModelFigures]
    emitted_at: AwareDatetime
    engagement: "EngagementFigures | None" = Field(None, description="engagement in the window")
    referrals: "ReferralFigures | None" = Field(None, description="lifetime; set in the lifetime update only")
    deals: "list[DealFigures] | None" = Field(None, description="lifetime; set in the lifetime update only")


class EngagementFigures(StrictModel):
    """A campaign's engagement in one window."""

    engagements: dict[EngagementKind, int] = Field(description="count per kind")
    total: int = Field(ge=0)
    impressions: int = Field(ge=0, description="from Impressions reports, spread evenly over each report's period")
    engagement_rate: Amount | None = Field(description="engagements / impressions; null without impressions")
    cost_per_engagement: Amount | None = Field(description="spend / engagements; null without engagements")
    follower_growth: int = Field(description="per account and channel, the last count in the window minus the count before it, summed")
    followers: int | None = Field(description="sum of the latest follower count of each account and channel; null without snapshots")


class AdvocateFigures(StrictModel):
    """One advocate's referrals for a campaign."""

    advocate_id: Id
    referred_people: int = Field(ge=0)
    new_customers: int = Field(ge=0)
    revenue: Amount = Field(description="first purchases of the advocate's new customers")


class ReferralFigures(StrictModel):
    """A campaign's word-of-mouth referrals, lifetime."""

    referred_people: int = Field(ge=0)
    clicks: int = Field(ge=0, description="credited clicks that carried a referral code")
    signups: int = Field(ge=0, description="credited sign-ups that carried a referral code")
    purchases: int = Field(ge=0, description="credited purchases that carried a referral code")
    new_customers: int = Field(ge=0, description="referred people whose first purchase followed the referral")
    revenue: Amount = Field(description="first purchases of the new customers")
    self_referrals_rejected: int = Field(ge=0)
    repeat_referrals_rejected: int = Field(ge=0, description="codes of a second advocate for an already referred person")
    top_advocates: list[AdvocateFigures] = Field(description="by new customers, then revenue, then referred people")


class DealFigures(StrictModel):
    """A group-buy deal's state and money, lifetime."""

    deal_id: Id
    name: str | None
    status: Literal["open", "active", "expired"]
    price: Amount
    threshold: int
    deadline: AwareDatetime
    buyers: int = Field(ge=0, description="distinct buyers")
    pending_purchases: int = Field(ge=0, description="purchases held until the deal activates or expires")
    pending_amount: Amount
    purchases: int = Field(ge=0, description="purchases counted as revenue")
    revenue: Amount
    refunds: int = Field(ge=0)
    refunded_amount: Amount
    rewards: int = Field(ge=0, description="advocates who got the deal free")
    reward_cost: Amount = Field(description="price times rewards; counted as campaign spend")


class Refund(StrictModel):
    """A purchase of an expired deal, to be paid back."""

    conversion_id: Id
    person_id: Id
    amount: Amount
    event_time: AwareDatetime


DealEventId = Annotated[str, Field(
    min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$",
    description="SHA-256 hex of the event type, deal id and advocate id; the same event always has the same id",
)]


class DealActivated(StrictModel):
    """A group-buy deal reached its buyer threshold before its deadline; its purchases count as revenue."""

    type: Literal["deal_activated"] = "deal_activated"
    event_id: DealEventId
    deal_id: Id
    campaign_id: Id
    threshold: int
    buyers: int
    purchases: int
    revenue: Amount
    currency: Currency
    activated_at: AwareDatetime = Field(
        description="event time of the threshold-th buyer among the buyers counted when the deal activated",
    )
    emitted_at: AwareDatetime


class DealExpired(StrictModel):
    """A group-buy deal passed its deadline below its threshold; its purchases are refunded."""

    type: Literal["deal_expired"] = "deal_expired"
    event_id: DealEventId
    deal_id: Id
    campaign_id: Id
    threshold: int
    buyers: int
    deadline: AwareDatetime
    refunds: list[Refund]
    refunded_amount: Amount
    currency: Currency
    expired_at: AwareDatetime = Field(description="event time of the campaign partition when the deal expired")
    emitted_at: AwareDatetime


class AdvocateReward(StrictModel):
    """An advocate gets a deal free: enough of the people they shared it with bought it."""

    type: Literal["advocate_reward"] = "advocate_reward"
    event_id: DealEventId
    deal_id: Id
    campaign_id: Id
    advocate_id: Id
    referred_buyers: list[Id]
    reward: Amount = Field(description="the deal's price; counted as campaign spend")
    currency: Currency
    rewarded_at: AwareDatetime = Field(description="event time at which the reward was earned")
    emitted_at: AwareDatetime


class FieldError(StrictModel):
    """One validation failure: where, what value, and why."""

    field: str
    value: str | None
    reason: str


DeadLetterReason = Literal["undecodable", "invalid", "unknown_type", "unsupported", "late"]
#: Every reason the worker and the collector give a dead letter.
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)
#: Reason that ``roitrack deadletters list`` shows for a message of the
#: dead-letter topic that is not a valid dead letter; no dead letter has it.
UNREADABLE_REASON = "(unreadable)"
#: Reasons that ``roitrack deadletters list`` filters by: the dead-letter reasons and ``UNREADABLE_REASON``.
LIST_REASONS: tuple[str, ...] = (*DEAD_LETTER_REASONS, UNREADABLE_REASON)
#: ``source_topic`` of the dead letters that the HTTP collector writes: they come from no Kafka topic.
COLLECTOR_SOURCE = "collector"


class DeadLetter(StrictModel):
    """A rejected message, with the reason and where it came from."""

    type: Literal["dead_letter"] = "dead_letter"
    reason: DeadLetterReason
    step: str
    errors: list[FieldError]
    source_topic: str
    source_partition: int
    source_offset: int
    event_index: int | None = Field(description="position of the event inside a batch message")
    payload: str = Field(description="raw payload, truncated to the configured size")
    payload_truncated: bool
    rejected_at: AwareDatetime


RoiUpdate.model_rebuild()


AlertRuleKind = Literal["roi_below", "cpa_above", "spend_without_conversions", "sudden_drop"]
AlertMetric = Literal["roi", "roas", "cpa", "revenue", "conversions", "seconds_without_conversions"]
AlertState = Literal["fired", "resolved"]

AlertId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
"""32 hexadecimal digits of a SHA-256 digest."""


class Alert(StrictModel):
    """A breach of an alert rule by one campaign and window: fired once, then resolved."""

    type: Literal["alert"] = "alert"
    alert_id: AlertId = Field(
        description=(
            "stable id of this message: the same breach and state always give the same id, so a "
            "message repeated after a crash can be dropped by it"
        )
    )
    breach_id: AlertId = Field(description="shared by the fired and the resolved message of one breach")
    rule_id: str = Field(min_length=1, max_length=64)
    rule_kind: AlertRuleKind
    state: AlertState
    campaign_id: Id
    campaign_name: str | None
    window: str = Field(description="window of the RoiUpdate records the rule reads: '1h', '24h', '7d' or 'lifetime'")
    model: AttributionModel
    metric: AlertMetric
    observed: Amount | None = Field(description="value of the metric at observed_at")
    threshold: Amount = Field(
        description="the rule's limit; for sudden_drop the baseline lowered by the drop percentage"
    )
    baseline: Amount | None = Field(description="sudden_drop: mean of the recent values; null for other rules")
    spend: Amount = Field(description="the window's spend at observed_at, in currency")
    currency: Currency
    update_sequence: int = Field(
        ge=1, description="sequence number of the last RoiUpdate of this campaign and window that the rule read"
    )
    breach_started_at: AwareDatetime = Field(description="when the condition began, on the rule's clock")
    observed_at: AwareDatetime = Field(description="time of the observation that changed the state, on the rule's clock")
    emitted_at: AwareDatetime = Field(description="wall-clock time at which roitrack alerts created this message")
    message_en: str = Field(description="one-line summary in English")
    message_nl: str = Field(description="one-line summary in Dutch")
