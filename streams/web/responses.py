"""JSON responses, JSON errors and bearer-token checks of the worker's web endpoints."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from roitrack.tokens import bearer_token_is_valid

log = logging.getLogger(__name__)

#: Maximum characters of an invalid value that a 400 response repeats.
MAX_ECHOED_CHARS = 128
#: Paths whose errors the middleware turns into JSON; other routes on the same server keep theirs.
API_PREFIX = "/api/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiProblem(Exception):
    """An error to return as JSON: the status, a message and, for 400, the parameter and value."""

    def __init__(self, status: int, message: str, parameter: str | None = None, value: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameter = parameter
        self.value = value


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Return a JSON response that no cache or proxy stores."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})},
    )


def error_response(problem: ApiProblem) -> web.Response:
    body = {"error": problem.message, "status": problem.status, "parameter": problem.parameter, "value": problem.value}
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return json_response(body, status=problem.status, headers=headers)


def invalid_parameter(parameter: str, value: str, expected: str) -> ApiProblem:
    """Build the 400 error of one invalid parameter, naming it, its value and what is expected."""
    echoed = value if len(value) <= MAX_ECHOED_CHARS else value[:MAX_ECHOED_CHARS] + "..."
    return ApiProblem(400, f"invalid {parameter} {echoed!r}: {expected}", parameter=parameter, value=echoed)


def route_of(request: web.Request) -> str:
    """Return the route pattern of a request, such as /api/v1/people/{person_id}/touchpoints.

    Logs name the pattern rather than the path, because paths contain person and order ids.
    """
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def require_token(request: web.Request, tokens: tuple[str, ...]) -> None:
    """Raise a 401 ApiProblem unless the request carries one of ``tokens`` as a bearer token."""
    if not bearer_token_is_valid(request.headers.get("Authorization"), tokens):
        log.debug("query API: %s without a valid bearer token", route_of(request))
        raise ApiProblem(401, "missing or invalid bearer token; send Authorization: Bearer <token>")


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn errors under /api/ into JSON: ApiProblem, aiohttp's 404 and 405, Redis outages, bugs."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ApiProblem as problem:
        return error_response(problem)
    except web.HTTPException as exc:
        if exc.status == 404:
            message = f"no endpoint at {request.path}; GET /openapi.json lists the endpoints"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}; use GET"
        else:
            message = exc.reason
        return error_response(ApiProblem(exc.status, message))
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError) as exc:
        log.warning("query API: Redis call failed or timed out for %s: %r", route_of(request), exc)
        return error_response(ApiProblem(503, "Redis is unreachable or timed out; retry in a few seconds"))
    except Exception:
        log.exception("query API: %s %s failed unexpectedly", request.method, route_of(request))
        return error_response(ApiProblem(500, "internal error; the worker log has the traceback"))
