"""Fixtures of the fault tests: a registry that stops every worker a test started, and per-test settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.conftest import _delete_namespace
from tests.harness import WorkerProcess, unique_settings



class Workers:
    """Starts `roitrack worker` processes and stops every one of them at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, name: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(settings, self.log_dir, name).start()
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            try:
                worker.stop(timeout_s=20)
            except AssertionError:
                worker.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    registry = Workers(tmp_path)
    try:
        yield registry
    finally:
        registry.stop_all()


FaultSettings = Callable[..., Settings]


@pytest.fixture
def fault_settings() -> Iterator[FaultSettings]:
    """Factory of settings with their own topics (created here), group and Redis namespace.

    The defaults are those of tests.harness.unique_settings. Keyword arguments override
    fields; ``kafka_bootstrap`` and ``redis_url`` are required
    because some tests bring their own broker or Redis. Namespaces are deleted at teardown
    when that Redis still replies.
    """
    created: list[Settings] = []

    def factory(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
        settings = unique_settings(kafka_bootstrap, redis_url, **overrides)
        create_topics(settings, kafka_bootstrap)
        created.append(settings)
        return settings

    yield factory

    from roitrack.embedded import redis_answers

    for settings in created:
        if redis_answers(settings.redis_url):
            _delete_namespace(settings.redis_url, settings.redis_namespace)
