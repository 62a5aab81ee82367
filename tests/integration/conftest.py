"""Integration fixtures: one worker per test module, on its own topics and namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.conftest import _delete_namespace
from tests.harness import WorkerProcess, unique_settings


@pytest.fixture(scope="module")
def worker_settings(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = unique_settings(kafka_bootstrap, redis_url)
    create_topics(settings, kafka_bootstrap)
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("worker")).start()
    try:
        yield settings
    finally:
        assert worker.stop() == 0, worker.log_tail()
        log_text = worker.log_text()
        assert "Traceback" not in log_text, log_text[-4000:]
        _delete_namespace(settings.redis_url, settings.redis_namespace)
