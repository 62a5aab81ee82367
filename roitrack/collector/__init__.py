"""The HTTP collector: a tracking pixel, a click redirect and a batch endpoint that produce events to Kafka.

``create_collector_app(settings)`` builds the aiohttp application and
``run_collector(settings)`` serves it. The collector validates every event
with ``schemas``, replaces personal data with ``schemas.privacy.protect``, and
responds only after the broker acknowledged what it produced. It never uses Redis.
"""

from roitrack.collector.app import create_collector_app, run_collector
from roitrack.collector.ingest import CollectorStats
from roitrack.collector.keys import STATS_KEY

__all__ = ["STATS_KEY", "CollectorStats", "create_collector_app", "run_collector"]
