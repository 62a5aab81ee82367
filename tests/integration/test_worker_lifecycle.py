"""Worker start and stop: restarts with pending work, and stopping while Redis is down."""

from __future__ import annotations

import time
from pathlib import Path

from roitrack.topics import create_topics
from tests.harness import (
    WorkerProcess,
    attribution_for,
    click,
    ids,
    pipeline_stats,
    purchase,
    send,
    unique_settings,
    wait_for,
)


def test_pending_released_after_restart(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    # The idle release waits long enough for the first worker to stop with the
    # conversion still pending; the second worker must release it without new traffic.
    settings = unique_settings(kafka_bootstrap, redis_url, conversion_idle_release_s=10.0)
    create_topics(settings, kafka_bootstrap)
    person = ids("person")
    campaign = ids("camp")
    first = WorkerProcess(settings, tmp_path, "first").start()
    try:
        send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T09:00:00Z"))
        bought = purchase(person, "2026-11-02T10:00:00Z")
        send(settings, settings.topic_conversions, person, bought)
        wait_for(lambda: pipeline_stats(settings).conversions_received == 1, 60, "the conversion to be pending", first)
    finally:
        assert first.stop() == 0
    assert pipeline_stats(settings).conversions_done == 0

    second = WorkerProcess(settings, tmp_path, "second").start()
    try:
        attribution = attribution_for(settings, bought["event_id"])
        assert [touch["campaign_id"] for touch in attribution["touchpoints"]] == [campaign]
    finally:
        second.stop()


def test_sigterm_stops_worker_without_redis(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    healthy = unique_settings(kafka_bootstrap, redis_url)
    create_topics(healthy, kafka_bootstrap)
    person = ids("person")
    send(healthy, healthy.topic_touchpoints, person, click(person, ids("camp"), "2026-11-02T09:00:00Z"))
    # Port 1 on loopback refuses connections: Redis is unreachable for this worker.
    broken = healthy.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    worker = WorkerProcess(broken, tmp_path).start()
    wait_for(lambda: "retrying" in worker.log_text(), 60, "the worker to retry its batch", worker)

    started = time.monotonic()
    returncode = worker.stop(timeout_s=20)
    stopped_s = time.monotonic() - started

    assert returncode == 0, worker.log_tail()
    assert stopped_s < 20
    assert "redis://127.0.0.1:1/0" in worker.log_text()
