"""Responses of the worker's query API and operations endpoints.

``streams.web.openapi`` builds the OpenAPI document (docs/openapi.json) from
these models, and the handlers in ``streams.web`` return JSON of these shapes.
No I/O here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import Currency, Id, StrictModel
from schemas.outputs import AttributionModel, Amount, Attribution, ModelFigures


class ApiError(StrictModel):
    """An error response of the query API."""

    error: str = Field(description="what failed, naming the id or parameter, and what to do next")
    status: int = Field(description="the HTTP status code, repeated")
    parameter: str | None = Field(None, description="the query or path parameter that was invalid (400 only)")
    value: str | None = Field(None, description="the invalid value, cut to 128 characters (400 only)")


class CampaignSummary(StrictModel):
    """A campaign that the ROI agent has an aggregate for."""

    campaign_id: Id
    name: str | None = Field(description="from the campaign definition; null before one arrived")
    channel: str | None = Field(description="from the campaign definition; null before one arrived")
    partition: int = Field(ge=0, description="campaign partition whose Redis keys hold the aggregate")


class CampaignList(StrictModel):
    """Every campaign of the deployment, sorted by id."""

    campaigns: list[CampaignSummary]
    count: int = Field(ge=0)


class WindowFigures(StrictModel):
    """A campaign's figures in one window: the same figures as a RoiUpdate of that window."""

    window: str = Field(description="'1h', '24h', '7d' style label, or 'lifetime'")
    window_s: int | None = Field(description="window length in seconds; null for lifetime")
    window_end: AwareDatetime | None = Field(description="event-time end of the window; null for lifetime")
    spend: Amount
    default_model: AttributionModel
    roi: Amount | None = Field(description="ROI under the default model")
    roas: Amount | None = Field(description="ROAS under the default model")
    cpa: Amount | None = Field(description="CPA under the default model")
    models: dict[AttributionModel, ModelFigures]


class CampaignRoi(StrictModel):
    """A campaign's ROI per window and attribution model, read from its aggregate in Redis."""

    campaign_id: Id
    campaign_name: str | None
    channel: str | None
    currency: Currency
    margin: Amount | None = Field(description="null before the campaign definition arrived")
    sequence: int | None = Field(description="sequence of the last RoiUpdate published; null before the first")
    windows: list[WindowFigures]


class OrderAttributions(StrictModel):
    """The attributions of the conversions with one order id, newest index entries included."""

    order_id: Id
    attributions: list[Attribution] = Field(
        description="one per conversion with this order id, sorted by event time; usually one"
    )


class StoredTouchpoint(StrictModel):
    """A touchpoint stored for a person. Redis keeps ids, class and time only, never personal data."""

    event_id: Id
    campaign_id: Id
    touch_class: Literal["click", "engagement", "checkin", "view"]
    event_time: AwareDatetime
    linked: bool = Field(description="stored under an anonymous id linked to the person, not under the id itself")


class PersonTouchpoints(StrictModel):
    """A person's most recent stored touchpoints, newest first."""

    touchpoints: list[StoredTouchpoint]
    count: int = Field(ge=0)
    linked_ids: int = Field(ge=0, description="anonymous ids linked to the person whose touchpoints were read")
    limit: int = Field(ge=1)


class Health(StrictModel):
    """Liveness: the process runs and its event loop handles requests."""

    status: Literal["ok"]


class RedisCheck(StrictModel):
    ok: bool
    error: str | None = Field(description="the error type when PING failed or timed out")


class PartitionCheck(StrictModel):
    ok: bool
    assigned: dict[str, list[int]] = Field(description="assigned partitions per topic")


class Readiness(StrictModel):
    """Readiness: Redis replies to PING and this worker owns at least one partition."""

    status: Literal["ready", "not_ready"]
    redis: RedisCheck
    partitions: PartitionCheck


#: Models that the OpenAPI document lists under components/schemas.
API_MODELS: tuple[type[StrictModel], ...] = (
    ApiError,
    CampaignList,
    CampaignRoi,
    OrderAttributions,
    PersonTouchpoints,
    Health,
    Readiness,
)
