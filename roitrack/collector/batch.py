"""The batch endpoint ``POST /v1/events`` for server-side and app events of every type.

The body is one JSON event object, a JSON array of events, or
``{"events": [...]}``. Every event gets its own result. Error responses carry
fixed messages and never repeat the request's content.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from roitrack.collector.ingest import Ingestor, ProduceError
from roitrack.collector.keys import INGESTOR_KEY, SETTINGS_KEY
from roitrack.settings import Settings
from roitrack.tokens import bearer_token_is_valid

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 64 * 1024
_STATUSES = ("accepted", "duplicate", "rejected", "dropped")


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Return a JSON response that no cache or proxy stores."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def read_limited_body(request: web.Request, max_bytes: int) -> bytes | None:
    """Read the request body; None when it is larger than ``max_bytes``.

    The declared Content-Length is checked first, and a chunked body is counted
    while it is read, so an oversized body is never held in memory whole.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class BodyError(ValueError):
    """The request body has no usable list of events; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def events_from_body(body: bytes, max_events: int) -> list[object]:
    """Return the events of a request body, or raise ``BodyError``."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError(400, "the body is not valid JSON; send an event object, an array of events or {\"events\": [...]}") from None

    items: list[object]
    if isinstance(payload, dict) and "type" not in payload and "events" in payload:
        events = payload["events"]
        if not isinstance(events, list):
            raise BodyError(400, "\"events\" must be a JSON array of event objects")
        items = events
    elif isinstance(payload, list):
        items = payload
    elif isinstance(payload, dict):
        items = [payload]
    else:
        raise BodyError(400, "the body must be an event object, an array of events or {\"events\": [...]}")

    if not items:
        raise BodyError(400, "the batch contains no events; send at least one")
    if len(items) > max_events:
        raise BodyError(
            413, f"the batch has {len(items)} events, more than the maximum of {max_events}; split it into smaller requests"
        )
    return items


async def handle_batch(request: web.Request) -> web.Response:
    """Validate and produce a batch of events; return one result per event."""
    settings: Settings = request.app[SETTINGS_KEY]
    if not bearer_token_is_valid(request.headers.get("Authorization"), settings.collector_tokens):
        log.debug("collector batch: request without a valid bearer token")
        return json_response(
            {"error": "missing or invalid bearer token; send Authorization: Bearer <token>"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    body = await read_limited_body(request, settings.collector_max_body_bytes)
    if body is None:
        return json_response(
            {"error": f"the body is larger than the maximum of {settings.collector_max_body_bytes} bytes; split the batch"},
            status=413,
        )
    try:
        items = events_from_body(body, settings.collector_max_batch_events)
    except BodyError as exc:
        return json_response({"error": exc.message}, status=exc.status)

    ingestor: Ingestor = request.app[INGESTOR_KEY]
    try:
        outcomes = await ingestor.ingest("batch", items)
    except ProduceError:
        return json_response(
            {
                "error": (
                    "the broker did not acknowledge every event; retry the request, and events "
                    "already stored will be reported as duplicate"
                )
            },
            status=503,
            headers={"Retry-After": "1"},
        )

    response: dict[str, Any] = {"results": [outcome.as_json() for outcome in outcomes]}
    for status in _STATUSES:
        response[status] = sum(1 for outcome in outcomes if outcome.status == status)
    return json_response(response)
