"""Shared fixtures: one broker and one Redis per session, unique settings per test.

ROITRACK_TEST_KAFKA_BOOTSTRAP and ROITRACK_TEST_REDIS_URL point the tests at
running services. Without the first, a tansu broker is started. Without the
second, a redis-server is started unless one replies at 127.0.0.1:6379.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from roitrack.embedded import EmbeddedBroker, LocalRedis
from roitrack.settings import Settings

TESTS_DIR = Path(__file__).resolve().parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

from tests.harness import TOPIC_FIELDS  # noqa: E402  # after the path constants above

SettingsFactory = Callable[..., Settings]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/integration with ``integration`` and under tests/e2e with ``e2e``."""
    markers = {
        TESTS_DIR / "integration": pytest.mark.integration,
        TESTS_DIR / "e2e": pytest.mark.e2e,
    }
    for item in items:
        path = Path(item.path).resolve()
        for folder, marker in markers.items():
            if path.is_relative_to(folder):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker: ROITRACK_TEST_KAFKA_BOOTSTRAP, or a tansu started here."""
    external = os.environ.get("ROITRACK_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: ROITRACK_TEST_REDIS_URL, 127.0.0.1:6379, or a redis-server started here."""
    external = os.environ.get("ROITRACK_TEST_REDIS_URL")
    if external:
        yield external
        return
    with LocalRedis() as local:
        yield local.ensure(DEFAULT_REDIS_URL)


def _delete_namespace(url: str, namespace: str) -> None:
    # Keys look like "ns:{p3}:..." (a hash tag after the namespace), so match "ns:*".
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> Iterator[SettingsFactory]:
    """Factory of Settings with this test's own app_id, Redis namespace, topic names and data_dir.

    All calls in one test share one suffix, so two calls without name overrides
    return the same topics and consumer group (a restarted worker, for example).
    Keyword arguments override any field. Keys of every namespace used are
    deleted at teardown.
    """
    suffix = uuid.uuid4().hex[:8]
    namespaces: set[tuple[str, str]] = set()

    def factory(**overrides: object) -> Settings:
        defaults = Settings.model_fields
        values: dict[str, object] = {
            "kafka_bootstrap": kafka_bootstrap,
            "redis_url": redis_url,
            "app_id": f"roitrack-test-{suffix}",
            "redis_namespace": f"rt-test-{suffix}",
            "data_dir": str(tmp_path / "faust-data"),
            "consumer_session_timeout_s": 6.0,
            "consumer_heartbeat_s": 1.0,
            "person_partitions": 4,
            "campaign_partitions": 2,
        }
        for field in TOPIC_FIELDS:
            values[field] = f"{defaults[field].default}-{suffix}"
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]  # field names as keyword arguments
        namespaces.add((settings.redis_url, settings.redis_namespace))
        return settings

    yield factory

    for url, namespace in namespaces:
        _delete_namespace(url, namespace)
