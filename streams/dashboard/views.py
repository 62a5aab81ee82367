"""The dashboard's HTTP routes on Faust's aiohttp web server.

``GET /dashboard`` serves the page, ``/dashboard/static/<file>`` its script and
style sheet, ``/dashboard/catalogue.json`` the English and Dutch texts, and
``/dashboard/events`` the live feed as server-sent events. The page refers to
the others by relative URLs, so it also works behind a proxy that serves it
under a path prefix.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import orjson
from aiohttp import web

from roitrack.i18n import CATALOGUE, DEFAULT_LANGUAGE, LANGUAGES, LOCALES
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL
from streams.dashboard.feed import DashboardFeed

log = logging.getLogger(__name__)

FEED_KEY = web.AppKey("roitrack_dashboard_feed", DashboardFeed)

#: Scripts and styles come only from this server, and the page may only connect back to it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: A comment line sent when nothing else was, so proxies keep the stream open
#: and a closed page is noticed by the failed write.
KEEPALIVE_S = 15.0
#: How long a browser waits before it reconnects a dropped stream, in milliseconds.
RECONNECT_MS = 3000

STATIC_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
PAGE_FILE = "dashboard.html"


def _read_static(name: str) -> bytes:
    return resources.files("streams.dashboard").joinpath("static", name).read_bytes()


def _response(body: bytes, content_type: str, cache: str = "no-cache") -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


class DashboardRoutes:
    """The route handlers, with the page files read once at start-up."""

    def __init__(self, feed: DashboardFeed) -> None:
        self.feed = feed
        self.page = _read_static(PAGE_FILE)
        self.static = {name: _read_static(name) for name in STATIC_FILES}
        self.catalogue = orjson.dumps({
            "languages": list(LANGUAGES),
            "default_language": DEFAULT_LANGUAGE,
            "locales": LOCALES,
            "texts": CATALOGUE,
            "models": list(ATTRIBUTION_MODELS),
            "default_model": DEFAULT_MODEL,
        })

    async def page_view(self, request: web.Request) -> web.Response:
        return _response(self.page, "text/html")

    async def static_view(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            # The name is not echoed back: it comes from the request.
            raise web.HTTPNotFound(text="no such dashboard file", headers=SECURITY_HEADERS)
        return _response(self.static[name], content_type)

    async def catalogue_view(self, request: web.Request) -> web.Response:
        return _response(self.catalogue, "application/json")

    async def events_view(self, request: web.Request) -> web.StreamResponse:
        subscriber = self.feed.subscribe()
        if subscriber is None:
            return web.Response(
                status=503, text="too many open dashboard pages; try again later",
                headers={**SECURITY_HEADERS, "Retry-After": "10"},
            )
        response = web.StreamResponse(headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            # Stops nginx from buffering the stream.
            "X-Accel-Buffering": "no",
        })
        try:
            await response.prepare(request)
            await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
            while True:
                try:
                    chunk = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    chunk = b": keep-alive\n\n"
                if chunk is None:
                    break
                await response.write(chunk)
        except ConnectionResetError:
            log.debug("dashboard: a page closed its event stream")
        finally:
            self.feed.unsubscribe(subscriber)
        return response


def add_dashboard_routes(app: web.Application, feed: DashboardFeed) -> None:
    """Add the dashboard's routes to ``app``, and start and stop the feed with it."""
    routes = DashboardRoutes(feed)
    app[FEED_KEY] = feed
    app.router.add_get("/dashboard", routes.page_view)
    app.router.add_get("/dashboard/catalogue.json", routes.catalogue_view)
    app.router.add_get("/dashboard/events", routes.events_view, allow_head=False)
    app.router.add_get("/dashboard/static/{name}", routes.static_view)

    async def start_feed(app: web.Application) -> None:
        await feed.start()

    async def stop_feed(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for open requests, so the event streams end first.
        await feed.stop()

    app.on_startup.append(start_feed)
    app.on_shutdown.append(stop_feed)
    app.on_cleanup.append(stop_feed)
