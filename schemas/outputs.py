"""Output records: attributions, ROI updates, credits and dead letters."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field, PlainSerializer

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


def _decimal_from_text(value: object) -> object:
    return Decimal(value) if isinstance(value, str) else value


Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_text),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
]
"""A decimal that may be negative (ROI) or fractional (linear conversions); JSON string."""


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
    basis: Literal["coupon", "touchpoints", "unattributed"]
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


class ModelFigures(StrictModel):
    """A campaign's figures under one attribution model, in one window."""

    conversions: Amount
    revenue: Amount
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
    spend: Amount
    default_model: AttributionModel
    roi: Amount | None
    roas: Amount | None
    cpa: Amount | None
    models: dict[AttributionModel, ModelFigures]
    emitted_at: AwareDatetime


class FieldError(StrictModel):
    """One validation failure: where, what value, and why."""

    field: str
    value: str | None
    reason: str


class DeadLetter(StrictModel):
    """A rejected message, with the reason and where it came from."""

    type: Literal["dead_letter"] = "dead_letter"
    reason: Literal["undecodable", "invalid", "unknown_type", "unsupported", "late"]
    step: str
    errors: list[FieldError]
    source_topic: str
    source_partition: int
    source_offset: int
    event_index: int | None = Field(description="position of the event inside a batch message")
    payload: str = Field(description="raw payload, truncated to the configured size")
    payload_truncated: bool
    rejected_at: AwareDatetime


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
