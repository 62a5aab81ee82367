"""Secrets come only from settings and never reach logs or command output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from roitrack.demo import settings_environment
from roitrack.topics import create_topics
from tests.harness import REPO_ROOT, WorkerProcess, attribution_for, click, ids, purchase, send, unique_settings

SALT = "salt-SECRET-7731"
TOKEN = "token-SECRET-9925"
PASSWORD = "sasl-SECRET-4410"


def test_worker_log_has_no_secrets(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    settings = unique_settings(kafka_bootstrap, redis_url, pii_salt=SALT, collector_tokens=(TOKEN,))
    create_topics(settings, kafka_bootstrap)
    worker = WorkerProcess(settings, tmp_path).start()
    try:
        person = ids("person")
        send(settings, settings.topic_touchpoints, person, {
            **click(person, ids("camp"), "2026-11-02T09:00:00Z"), "email": "ann@example.com",
        })
        bought = purchase(person, "2026-11-02T10:00:00Z")
        send(settings, settings.topic_conversions, person, bought)
        attribution_for(settings, bought["event_id"])
    finally:
        worker.stop()
    log_text = worker.log_text()
    assert "loaded person partition" in log_text
    assert SALT not in log_text
    assert TOKEN not in log_text
    assert "ann@example.com" not in log_text


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roitrack", *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60,
    )


def test_settings_output_hides_secrets(kafka_bootstrap: str, redis_url: str) -> None:
    settings = unique_settings(kafka_bootstrap, redis_url, pii_salt=SALT, collector_tokens=(TOKEN,))
    env = {**os.environ, **settings_environment(settings)}

    listed = run_cli("settings", env=env)

    assert listed.returncode == 0
    assert SALT not in listed.stdout + listed.stderr
    assert TOKEN not in listed.stdout + listed.stderr


def test_invalid_settings_error_hides_secrets(kafka_bootstrap: str, redis_url: str) -> None:
    settings = unique_settings(kafka_bootstrap, redis_url, pii_salt=SALT)
    env = {
        **os.environ, **settings_environment(settings),
        # SASL without a mechanism is invalid, so the error lists the Kafka settings.
        "ROITRACK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ROITRACK_KAFKA_SASL_PASSWORD": PASSWORD,
    }

    failed = run_cli("worker", env=env)

    assert failed.returncode != 0
    assert "ROITRACK_KAFKA" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr
    assert SALT not in failed.stdout + failed.stderr
