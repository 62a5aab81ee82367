"""The OpenAPI 3.1 document of the worker's web endpoints, built from schemas/api.py.

``tools/gen_openapi.py`` writes it to docs/openapi.json, and the worker
serves the same document at /openapi.json.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.api import API_MODELS
from schemas.common import MAX_ID_LENGTH
from schemas.outputs import ATTRIBUTION_MODELS

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"


def _ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("ApiError", description)


def _id_parameter(name: str, where: str, description: str, required: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description + " Percent-encode it in the path.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    }


_UNAUTHORIZED = _error("Missing or invalid bearer token.")
_UNAVAILABLE = _error("Redis is unreachable or timed out; retry later.")
_TOKEN: list[dict[str, list[str]]] = [{"bearerAuth": []}]
#: The aggregate endpoints need a token unless ROITRACK_API_OPEN_AGGREGATES is true.
_TOKEN_UNLESS_OPEN: list[dict[str, list[str]]] = [{"bearerAuth": []}, {}]


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/campaigns": {"get": {
            "operationId": "listCampaigns",
            "summary": "List every campaign with its name and channel",
            "description": "Needs a bearer token unless ROITRACK_API_OPEN_AGGREGATES is true.",
            "security": _TOKEN_UNLESS_OPEN,
            "responses": {
                "200": _json("CampaignList", "Every campaign, sorted by id."),
                "401": _UNAUTHORIZED,
                "503": _UNAVAILABLE,
            },
        }},
        "/api/v1/campaigns/{campaign_id}/roi": {"get": {
            "operationId": "getCampaignRoi",
            "summary": "A campaign's spend, conversions, revenue, ROI, ROAS and CPA per window and model",
            "description": (
                "The figures of the campaign's RoiUpdates, computed from its aggregate in Redis. Rolling "
                "windows end at the campaign partition's event-time watermark. Spend, revenue, ROI, ROAS and "
                "CPA are rounded to 6 decimal places, half to even, and ROI, ROAS and CPA are computed from the "
                "unrounded spend and revenue. Needs a bearer token unless ROITRACK_API_OPEN_AGGREGATES is true."
            ),
            "security": _TOKEN_UNLESS_OPEN,
            "parameters": [
                _id_parameter("campaign_id", "path", "The campaign id."),
                {
                    "name": "window", "in": "query", "required": False,
                    "description": (
                        "Only this window: a label of ROITRACK_ROI_WINDOWS_S ('1h', '24h', '7d' by default) "
                        "or 'lifetime'. All windows when left out."
                    ),
                    "schema": {"type": "string"},
                },
                {
                    "name": "model", "in": "query", "required": False,
                    "description": "Only this attribution model in `models`. All models when left out.",
                    "schema": {"type": "string", "enum": list(ATTRIBUTION_MODELS)},
                },
            ],
            "responses": {
                "200": _json("CampaignRoi", "The campaign's figures."),
                "400": _error("Invalid campaign id, window or model; the error names the parameter and value."),
                "401": _UNAUTHORIZED,
                "404": _error("No aggregate of this campaign exists."),
                "503": _UNAVAILABLE,
            },
        }},
        "/api/v1/attributions/{order_id}": {"get": {
            "operationId": "getOrderAttributions",
            "summary": "The attributions of the conversions with an order id",
            "description": (
                "Read from the index that the attribution agent writes when it releases a conversion, kept "
                "for ROITRACK_ATTRIBUTION_INDEX_TTL_S. Always needs a bearer token."
            ),
            "security": _TOKEN,
            "parameters": [
                _id_parameter("order_id", "path", "The order id of the purchase or coupon redemption."),
                _id_parameter(
                    "person_id", "query",
                    "Only this person's conversions. Reads one person partition instead of all of them.",
                    required=False,
                ),
            ],
            "responses": {
                "200": _json("OrderAttributions", "The attributions, oldest conversion first."),
                "400": _error("Invalid order id or person id."),
                "401": _UNAUTHORIZED,
                "404": _error("No attribution of this order is stored, or the index is off."),
                "503": _UNAVAILABLE,
            },
        }},
        "/api/v1/people/{person_id}/touchpoints": {"get": {
            "operationId": "getPersonTouchpoints",
            "summary": "A person's newest stored touchpoints, with those of linked anonymous ids",
            "description": (
                "Redis stores a touchpoint's event id, campaign id, class and time only; IP addresses, "
                "user agents, e-mail addresses and phone numbers are never stored. Linked anonymous ids "
                "are counted, not returned. Always needs a bearer token."
            ),
            "security": _TOKEN,
            "parameters": [
                _id_parameter("person_id", "path", "The user id, or the anonymous id of a visitor."),
                {
                    "name": "limit", "in": "query", "required": False,
                    "description": "Most touchpoints returned; default 50, at most ROITRACK_MAX_TOUCHPOINTS_PER_PERSON.",
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "responses": {
                "200": _json("PersonTouchpoints", "The touchpoints, newest first; an empty list when none is stored."),
                "400": _error("Invalid person id or limit."),
                "401": _UNAUTHORIZED,
                "503": _UNAVAILABLE,
            },
        }},
        "/healthz": {"get": {
            "operationId": "health",
            "summary": "Liveness: the process is up",
            "security": [],
            "responses": {"200": _json("Health", "Always, while the event loop handles requests.")},
        }},
        "/readyz": {"get": {
            "operationId": "readiness",
            "summary": "Readiness: Redis replies to PING and this worker owns at least one partition",
            "security": [],
            "responses": {
                "200": _json("Readiness", "Ready."),
                "503": _json("Readiness", "Not ready; the checks show why."),
            },
        }},
        "/metrics": {"get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics in the text exposition format",
            "security": [],
            "responses": {"200": {
                "description": "The worker's metrics; docs/architecture.md lists them.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {
                "description": "The OpenAPI 3.1 document.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }},
        }},
    }


def _package_version() -> str:
    try:
        return version("roitrack")
    except PackageNotFoundError:
        return "0.0.0"


def openapi_document() -> dict[str, Any]:
    """Build the OpenAPI 3.1 document: the paths above and the JSON Schemas of the response models."""
    _, top = models_json_schema([(model, "serialization") for model in API_MODELS], ref_template=_REF)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "roitrack worker API",
            "version": _package_version(),
            "description": (
                "Query API, health checks and metrics served by `roitrack worker` when ROITRACK_WEB_ENABLED "
                "is true, on ROITRACK_WEB_BIND:ROITRACK_WEB_PORT. Errors are JSON objects of the ApiError "
                "schema. Amounts are decimal strings in the reporting currency."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:6066", "description": "the default bind address and port"}],
        "paths": _paths(),
        "components": {
            "schemas": top["$defs"],
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the tokens in ROITRACK_API_TOKENS.",
                },
            },
        },
    }
