"""The collector's aiohttp application: routes, the Kafka producer's lifecycle, and the runner."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from roitrack.collector.batch import handle_batch, json_response
from roitrack.collector.browser import handle_pixel, handle_redirect
from roitrack.collector.ingest import CollectorStats, Ingestor, RecentIds
from roitrack.collector.keys import INGESTOR_KEY, SETTINGS_KEY, STATS_KEY
from roitrack.collector.packer import Packer
from roitrack.connections import aiokafka_config
from roitrack.settings import Settings

log = logging.getLogger(__name__)
#: Logger of the HTTP server's own errors, in place of aiohttp's "aiohttp.server".
server_log = logging.getLogger("roitrack.collector.server")

#: How long a produce request may wait for the broker. A request that waits
#: longer fails, so a browser or client is not held for aiokafka's default of
#: 40 s. The batch endpoint then returns 503.
PRODUCER_REQUEST_TIMEOUT_MS = 10_000
#: Small, so a lone pixel hit waits little for batching.
PRODUCER_LINGER_MS = 5
_PRODUCER_KEY = web.AppKey("roitrack_collector_producer", AIOKafkaProducer)
_PACKER_KEY = web.AppKey("roitrack_collector_packer", Packer)


class PathAccessLogger(AbstractAccessLogger):
    """Access log at DEBUG with method, path, status and duration only.

    aiohttp's default format includes the client address, the query string
    (user ids), the Referer and the User-Agent, which are personal data.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.debug("%s %s %d %.1f ms", request.method, request.path, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class MalformedRequestFilter(logging.Filter):
    """Rewrites aiohttp's log of a malformed HTTP request without the raw request line.

    aiohttp logs the client address and the offending bytes with a traceback,
    which may contain personal data from the query string or headers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "malformed HTTP request rejected with %d (%s)"
            record.args = (error.code, type(error).__name__)
            record.exc_info = None
            record.exc_text = None
        return True


async def handle_health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


class CollectorStatsMetrics(Collector):
    """Exposes the collector's counters per endpoint and status to Prometheus, read at each scrape."""

    def __init__(self, stats: CollectorStats, packer_of: Callable[[], Packer | None]) -> None:
        self.stats = stats
        self.packer_of = packer_of

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "roitrack_collector_events",
            "Events handled by the collector, per endpoint (pixel, redirect, batch) and status "
            "(accepted, duplicate, rejected, dropped, failed, blocked).",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), count in sorted(self.stats.counts.items()):
            family.add_metric([endpoint, status], count)
        yield family
        packer = self.packer_of()
        if packer is not None:
            yield CounterMetricFamily(
                "roitrack_collector_kafka_messages",
                "Kafka messages the broker acknowledged to the collector, dead letters included.",
                value=packer.messages,
            )
            yield CounterMetricFamily(
                "roitrack_collector_kafka_message_events",
                "Events in those messages; divided by the messages, it is the events per message that packing reached.",
                value=packer.events,
            )


_METRICS_REGISTRY_KEY = web.AppKey("roitrack_collector_metrics", CollectorRegistry)


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the collector's counters in Prometheus' text format; no token needed."""
    return web.Response(
        body=generate_latest(request.app[_METRICS_REGISTRY_KEY]),
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )


async def _add_security_headers(request: web.Request, response: StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def _start_producer(app: web.Application) -> None:
    settings = app[SETTINGS_KEY]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(),
        client_id="roitrack-collector",
        acks="all",
        # Idempotence needs broker support that not every Kafka-protocol broker has,
        # and the worker drops repeated events by id.
        enable_idempotence=False,
        linger_ms=PRODUCER_LINGER_MS,
        request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
        **aiokafka_config(settings),
    )
    await producer.start()
    app[_PRODUCER_KEY] = producer
    packer = Packer(
        producer,
        within_s=settings.collector_pack_within_s,
        max_events=settings.collector_pack_max_events,
        max_bytes=settings.collector_pack_max_bytes,
    )
    app[_PACKER_KEY] = packer
    app[INGESTOR_KEY] = Ingestor(settings, packer, app[STATS_KEY], RecentIds())
    log.info(
        "collector producer connected to %s; packing events per partition within %.3f s",
        settings.kafka_bootstrap, settings.collector_pack_within_s,
    )
    if not settings.collector_tokens:
        log.warning("ROITRACK_COLLECTOR_TOKENS is empty, so POST /v1/events rejects every request with 401")
    if not settings.collector_redirect_hosts:
        log.warning("ROITRACK_COLLECTOR_REDIRECT_HOSTS is empty, so GET /r rejects every redirect with 400")


async def _stop_producer(app: web.Application) -> None:
    packer = app.get(_PACKER_KEY)
    if packer is not None:
        # The open packs go to the producer first, and its stop sends and awaits them.
        await packer.stop()
    producer = app.get(_PRODUCER_KEY)
    if producer is not None:
        await producer.stop()
        log.info("collector producer stopped; counters: %s", app[STATS_KEY].as_dict())


def create_collector_app(settings: Settings) -> web.Application:
    """Build the collector application, which starts its Kafka producer on startup and stops it on cleanup."""
    settings.require_kafka()
    app = web.Application(client_max_size=settings.collector_max_body_bytes)
    app[SETTINGS_KEY] = settings
    app[STATS_KEY] = CollectorStats()
    registry = CollectorRegistry()
    registry.register(CollectorStatsMetrics(app[STATS_KEY], lambda: app.get(_PACKER_KEY)))
    app[_METRICS_REGISTRY_KEY] = registry
    app.router.add_get("/p.gif", handle_pixel, allow_head=False)
    app.router.add_get("/r", handle_redirect, allow_head=False)
    app.router.add_post("/v1/events", handle_batch)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    app.on_startup.append(_start_producer)
    app.on_cleanup.append(_stop_producer)
    app.on_response_prepare.append(_add_security_headers)
    return app


def run_collector(settings: Settings) -> None:
    """Serve the collector on ``collector_bind``:``collector_port`` until SIGINT or SIGTERM."""
    app = create_collector_app(settings)
    if not any(isinstance(existing, MalformedRequestFilter) for existing in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())
    log.info(
        "collector starting on http://%s:%d, producing to %s",
        settings.collector_bind, settings.collector_port, settings.kafka_bootstrap,
    )
    web.run_app(
        app,
        host=settings.collector_bind,
        port=settings.collector_port,
        access_log_class=PathAccessLogger,
        access_log=logging.getLogger("roitrack.collector.access"),
        # NOTE: aiohttp still responds to a malformed request line or header with a
        # text/plain 400 that quotes the offending bytes, before any handler runs.
        # Put a reverse proxy in front of the collector to reject such requests.
        logger=server_log,
        print=None,
    )
    log.info("collector stopped")
