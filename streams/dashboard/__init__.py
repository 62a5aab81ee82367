"""The live ROI dashboard, served by the worker's web server.

``register_dashboard(pipeline)`` adds the routes of ``streams.dashboard.views``
to Faust's aiohttp application when ``ROITRACK_WEB_ENABLED`` and
``ROITRACK_DASHBOARD_ENABLED`` are both true. docs/architecture.md describes
where the figures come from.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from streams.dashboard.feed import DashboardFeed
from streams.dashboard.snapshot import read_snapshot
from streams.dashboard.views import add_dashboard_routes

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)

__all__ = ["DashboardFeed", "register_dashboard"]


def register_dashboard(pipeline: "Pipeline") -> DashboardFeed | None:
    """Serve the dashboard on the pipeline's web server and return its feed, or return None when it is off."""
    settings = pipeline.settings
    if not (settings.web_enabled and settings.dashboard_enabled):
        return None
    web_app = getattr(pipeline.app.web, "web_app", None)
    if not isinstance(web_app, web.Application):
        log.warning(
            "dashboard not served: Faust's web driver %s is not the aiohttp one; "
            "set ROITRACK_DASHBOARD_ENABLED=false to silence this",
            type(pipeline.app.web).__name__,
        )
        return None
    feed = DashboardFeed(settings, partial(read_snapshot, settings, pipeline.store, pipeline.roi.roi_updates))
    add_dashboard_routes(web_app, feed)
    log.info("serving the dashboard at http://127.0.0.1:%d/dashboard once the web server starts", settings.web_port)
    return feed
