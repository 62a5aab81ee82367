"""Typed keys of the objects the collector keeps on its aiohttp application."""

from __future__ import annotations

from aiohttp import web

from roitrack.collector.ingest import CollectorStats, Ingestor
from roitrack.settings import Settings

SETTINGS_KEY = web.AppKey("roitrack_settings", Settings)
#: Counters per endpoint and status: accepted, duplicate, rejected, dropped, failed, blocked.
STATS_KEY = web.AppKey("roitrack_collector_stats", CollectorStats)
#: Set while the application runs, between startup and cleanup.
INGESTOR_KEY = web.AppKey("roitrack_collector_ingestor", Ingestor)
