"""Handlers of the query API under /api/v1: campaigns, campaign ROI, attributions, touchpoints.

The responses are described in docs/openapi.json (schemas/api.py). Every
handler checks the bearer token first, then its parameters, then reads Redis
through ``streams.web.queries``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from roitrack.settings import Settings
from schemas.common import MAX_ID_LENGTH, Id
from schemas.outputs import ATTRIBUTION_MODELS
from streams.web import queries
from streams.web.responses import ApiProblem, invalid_parameter, json_response, require_token

if TYPE_CHECKING:
    from streams.app import Pipeline

#: The schemas' rule for ids: 1-128 characters without whitespace, control or invisible format characters.
_ID: TypeAdapter[str] = TypeAdapter(Id)
_DIGITS = re.compile(r"^[0-9]{1,9}$")
DEFAULT_TOUCHPOINT_LIMIT = 50


def checked_id(parameter: str, value: str) -> str:
    """Return ``value`` when it is a valid id, else raise a 400 ApiProblem naming the parameter."""
    try:
        return _ID.validate_python(value)
    except ValidationError:
        raise invalid_parameter(
            parameter, value, f"ids are 1-{MAX_ID_LENGTH} characters without whitespace or control characters",
        ) from None


class QueryApi:
    """The /api/v1 handlers, bound to one pipeline's settings and Redis store."""

    def __init__(self, pipeline: "Pipeline") -> None:
        self.settings: Settings = pipeline.settings
        self.store = pipeline.store
        self.window_labels = queries.window_labels(self.settings)

    def _authorize(self, request: web.Request, personal: bool) -> None:
        if personal or not self.settings.api_open_aggregates:
            require_token(request, self.settings.api_tokens)

    async def campaigns(self, request: web.Request) -> web.Response:
        """GET /api/v1/campaigns: every campaign's id, name, channel and partition."""
        self._authorize(request, personal=False)
        campaigns = await queries.list_campaigns(self.store, self.settings)
        return json_response({"campaigns": campaigns, "count": len(campaigns)})

    async def campaign_roi(self, request: web.Request) -> web.Response:
        """GET /api/v1/campaigns/{campaign_id}/roi?window=&model=: figures per window and model."""
        self._authorize(request, personal=False)
        campaign_id = checked_id("campaign_id", request.match_info["campaign_id"])
        window = request.query.get("window")
        if window is None:
            windows = list(self.window_labels.values())
        elif window in self.window_labels:
            windows = [self.window_labels[window]]
        else:
            raise invalid_parameter("window", window, f"use one of {', '.join(self.window_labels)}")
        model = request.query.get("model")
        if model is not None and model not in ATTRIBUTION_MODELS:
            raise invalid_parameter("model", model, f"use one of {', '.join(ATTRIBUTION_MODELS)}")
        report = await queries.campaign_roi(self.store, self.settings, campaign_id, windows, model)
        if report is None:
            raise ApiProblem(
                404, f"campaign {campaign_id!r} not found: no credit, definition or spend of it has been applied",
            )
        return json_response(report)

    async def attribution(self, request: web.Request) -> web.Response:
        """GET /api/v1/attributions/{order_id}?person_id=: the attributions of an order's conversions."""
        self._authorize(request, personal=True)
        order_id = checked_id("order_id", request.match_info["order_id"])
        person_id = request.query.get("person_id")
        if person_id is not None:
            checked_id("person_id", person_id)
        ttl_s = self.settings.attribution_index_ttl_s
        if not ttl_s:
            raise ApiProblem(
                404, f"order {order_id!r} not found: the attribution index is off (ROITRACK_ATTRIBUTION_INDEX_TTL_S=0)",
            )
        attributions = await queries.order_attributions(self.store, self.settings, order_id, person_id)
        if not attributions:
            raise ApiProblem(
                404,
                f"order {order_id!r} not found: no attribution of it is stored. A conversion is indexed "
                f"once it is attributed, after its settle delay, and kept for {ttl_s} s "
                "(ROITRACK_ATTRIBUTION_INDEX_TTL_S)",
            )
        return json_response({"order_id": order_id, "attributions": attributions})

    async def touchpoints(self, request: web.Request) -> web.Response:
        """GET /api/v1/people/{person_id}/touchpoints?limit=: a person's newest stored touchpoints."""
        self._authorize(request, personal=True)
        person_id = checked_id("person_id", request.match_info["person_id"])
        maximum = self.settings.max_touchpoints_per_person
        text = request.query.get("limit")
        limit = DEFAULT_TOUCHPOINT_LIMIT if text is None else _parse_limit(text, maximum)
        body = await queries.person_touchpoints(self.store, self.settings, person_id, min(limit, maximum))
        return json_response(body)


def _parse_limit(text: str, maximum: int) -> int:
    expected = f"use a whole number from 1 to {maximum} (ROITRACK_MAX_TOUCHPOINTS_PER_PERSON)"
    if not _DIGITS.match(text):
        raise invalid_parameter("limit", text, expected)
    limit = int(text)
    if not 1 <= limit <= maximum:
        raise invalid_parameter("limit", text, expected)
    return limit
