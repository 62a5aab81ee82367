"""Operations endpoints of the worker: /healthz, /readyz and /metrics. None needs a token.

They report no personal data: the metrics are labelled by topic, partition,
reason and operation only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.web.responses import json_response

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)

#: How long /readyz waits for Redis to reply to PING, and /metrics for the broker's end offsets.
CHECK_TIMEOUT_S = 2.0
#: A failed end-offset read during a scrape is logged at most this often.
_LAG_WARNING_INTERVAL_S = 60.0


class OpsEndpoints:
    """Health, readiness and Prometheus metrics of one pipeline."""

    def __init__(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self._last_lag_warning_s = -_LAG_WARNING_INTERVAL_S

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz: return 200 while the process runs and its event loop handles requests."""
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """GET /readyz: return 200 when Redis replies to PING and this worker owns a partition, else 503."""
        redis_error: str | None = None
        try:
            await asyncio.wait_for(self.pipeline.redis.ping(), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  # any failure means not ready; the type is reported
            redis_error = type(exc).__name__
        assigned: dict[str, list[int]] = defaultdict(list)
        for tp in sorted(self._assignment()):
            assigned[tp.topic].append(tp.partition)
        ready = redis_error is None and bool(assigned)
        body = {
            "status": "ready" if ready else "not_ready",
            "redis": {"ok": redis_error is None, "error": redis_error},
            "partitions": {"ok": bool(assigned), "assigned": dict(assigned)},
        }
        return json_response(body, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        """GET /metrics: every metric in Prometheus' text format, with the lag read now."""
        await self.update_gauges()
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    def _assignment(self) -> set[Any]:
        try:
            return set(self.pipeline.app.consumer.assignment())
        except Exception:  # noqa: BLE001  # the consumer is not started yet: nothing assigned
            return set()

    async def update_gauges(self) -> None:
        """Set the pending-conversion and consumer-lag gauges from the worker's state and the broker."""
        pipeline = self.pipeline
        self.metrics.pending_conversions.set(
            sum(len(state.pending) for state in list(pipeline.attribution.partitions.values()))
        )
        assigned = self._assignment()
        if not assigned:
            self.metrics.consumer_lag.clear()
            return
        try:
            end_offsets = await asyncio.wait_for(pipeline.app.consumer.highwaters(*assigned), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  # the gauges keep their last values
            now_s = time.monotonic()
            if now_s - self._last_lag_warning_s >= _LAG_WARNING_INTERVAL_S:
                self._last_lag_warning_s = now_s
                log.warning("metrics: cannot read the end offsets for the consumer lag: %r", exc)
            return
        self.metrics.consumer_lag.clear()
        for tp in assigned:
            end_offset = end_offsets.get(tp)
            applied = pipeline.applied_offset(tp.topic, tp.partition)
            if end_offset is None or applied is None:
                continue  # the partition's state is not loaded yet
            lag = max(0, int(end_offset) - applied - 1)
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
