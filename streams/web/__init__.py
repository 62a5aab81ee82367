"""The worker's web endpoints on Faust's web server (aiohttp driver).

``register_api`` adds every route of this package; ``streams.app.Pipeline``
calls it when ``ROITRACK_WEB_ENABLED`` is true. Other route sets on the same
server register themselves the same way, beside it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust
from aiohttp import web

from streams.web.api import QueryApi
from streams.web.openapi import openapi_document
from streams.web.ops import OpsEndpoints
from streams.web.responses import api_errors, json_response

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)

__all__ = ["aiohttp_application", "register_api"]


def aiohttp_application(app: faust.App) -> web.Application:
    """Return the aiohttp application behind Faust's web server, to add routes to before it starts."""
    application = getattr(app.web, "web_app", None)
    if not isinstance(application, web.Application):
        raise RuntimeError(
            f"Faust's web driver is {type(app.web).__name__}, not the aiohttp driver that roitrack's "
            "routes need; leave Faust's `web` setting at its default"
        )
    return application


def register_api(pipeline: "Pipeline") -> None:
    """Add the query API, /openapi.json, /healthz, /readyz and /metrics to the worker's web server."""
    application = aiohttp_application(pipeline.app)
    api = QueryApi(pipeline)
    ops = OpsEndpoints(pipeline)
    document = openapi_document()

    async def openapi(request: web.Request) -> web.Response:
        return json_response(document)

    router = application.router
    router.add_get("/api/v1/campaigns", api.campaigns)
    router.add_get("/api/v1/campaigns/{campaign_id}/roi", api.campaign_roi)
    router.add_get("/api/v1/attributions/{order_id}", api.attribution)
    router.add_get("/api/v1/people/{person_id}/touchpoints", api.touchpoints)
    router.add_get("/openapi.json", openapi)
    router.add_get("/healthz", ops.healthz)
    router.add_get("/readyz", ops.readyz)
    router.add_get("/metrics", ops.metrics_page)
    application.middlewares.append(api_errors)

    settings = pipeline.settings
    if not settings.api_tokens:
        log.warning(
            "ROITRACK_API_TOKENS is empty, so the attribution and touchpoint endpoints%s reject every request with 401",
            "" if settings.api_open_aggregates else " and the campaign endpoints",
        )
    log.info("web server will listen on http://%s:%d (query API under /api/v1)", settings.web_bind, settings.web_port)
