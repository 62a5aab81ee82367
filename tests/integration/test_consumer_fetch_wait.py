"""The fetch wait set on the worker's consumer must reach the fetcher that builds aiokafka's fetch requests."""

from __future__ import annotations

import asyncio

from streams.app import Pipeline
from tests.conftest import SettingsFactory


def test_started_consumer_fetches_with_setting(make_settings: SettingsFactory) -> None:
    pipeline = Pipeline(make_settings(consumer_fetch_max_wait_ms=120))

    async def started_fetch_wait() -> int:
        # Created as Faust's consumer thread creates it in on_start, then started against the broker.
        consumer = pipeline.app.consumer._thread._create_consumer(asyncio.get_running_loop())  # type: ignore[attr-defined]  # Faust's aiokafka consumer thread
        await consumer.start()
        try:
            return int(consumer._fetcher._fetch_max_wait_ms)
        finally:
            await consumer.stop()
            await pipeline.redis.aclose()

    assert asyncio.run(started_fetch_wait()) == 120
