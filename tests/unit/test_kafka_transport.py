"""The worker's Kafka consumer must use ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS instead of Faust's fixed 1500 ms.

The consumers are created the way Faust's consumer thread creates them when it
starts, but never started, so no broker is needed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from roitrack.settings import Settings, load_settings
from streams.app import Pipeline, create_faust_app
from streams.kafka_transport import ConsumerThread, Transport, set_fetch_max_wait

BOOTSTRAP = "127.0.0.1:9092"


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(kafka_bootstrap=BOOTSTRAP, data_dir=str(tmp_path), **overrides)


async def created_fetch_wait(app: faust.App) -> int:
    """Create the app's aiokafka consumer as Faust does at start-up and return its fetch wait."""
    consumer = app.consumer._thread._create_consumer(asyncio.get_running_loop())  # type: ignore[attr-defined]  # Faust's aiokafka consumer thread
    try:
        return int(consumer._fetch_max_wait_ms)
    finally:
        await consumer.stop()


def test_pipeline_consumer_uses_setting(tmp_path: Path) -> None:
    pipeline = Pipeline(settings_for(tmp_path, consumer_fetch_max_wait_ms=250))

    async def check() -> int:
        try:
            return await created_fetch_wait(pipeline.app)
        finally:
            await pipeline.redis.aclose()

    assert isinstance(pipeline.app.transport, Transport)
    assert isinstance(pipeline.app.consumer._thread, ConsumerThread)  # type: ignore[attr-defined]  # Faust's aiokafka consumer
    assert asyncio.run(check()) == 250


def test_pipeline_consumer_default_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS", raising=False)
    pipeline = Pipeline(settings_for(tmp_path))

    async def check() -> int:
        try:
            return await created_fetch_wait(pipeline.app)
        finally:
            await pipeline.redis.aclose()

    assert Settings.model_fields["consumer_fetch_max_wait_ms"].default == 100
    assert asyncio.run(check()) == 100


def test_faust_app_with_overrides_uses_setting(tmp_path: Path) -> None:
    # The bench's table baseline passes Faust settings on top of roitrack's.
    app = create_faust_app(settings_for(tmp_path, consumer_fetch_max_wait_ms=40), topic_allow_declare=True)

    assert app.conf.topic_allow_declare is True
    assert asyncio.run(created_fetch_wait(app)) == 40


def test_faust_alone_waits_1500_ms(tmp_path: Path) -> None:
    # The reason for the transport: without it, Faust 0.15 ignores the setting.
    app = faust.App("plain", broker=f"kafka://{BOOTSTRAP}", datadir=str(tmp_path / "plain-data"))

    assert asyncio.run(created_fetch_wait(app)) == 1500


def test_producer_keeps_faust_transport(tmp_path: Path) -> None:
    app = create_faust_app(settings_for(tmp_path))

    assert not isinstance(app.producer_transport, Transport)
    assert app.producer.linger_ms == 0


@pytest.mark.parametrize("value", [9, 10_001])
def test_fetch_wait_bounds(value: int) -> None:
    with pytest.raises(ValueError, match="consumer_fetch_max_wait_ms"):
        load_settings(consumer_fetch_max_wait_ms=value)


def test_set_fetch_wait_rejects_started_consumer() -> None:
    started = SimpleNamespace(_fetch_max_wait_ms=1500, _fetcher=object())

    with pytest.raises(RuntimeError, match="already started"):
        set_fetch_max_wait(started, 100)

    assert started._fetch_max_wait_ms == 1500


def test_set_fetch_wait_needs_aiokafka_attribute() -> None:
    renamed = SimpleNamespace(_fetcher=None)

    with pytest.raises(RuntimeError, match="Adapt streams/kafka_transport.py"):
        set_fetch_max_wait(renamed, 100)
