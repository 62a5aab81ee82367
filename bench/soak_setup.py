"""Settings, worker process and Redis helpers of a soak run."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from roitrack.connections import SyncRedisClient
from roitrack.demo import settings_environment
from roitrack.settings import Settings
from streams.state import partition_for_key

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def soak_settings(base: Settings, run_id: str, bootstrap: str, redis_url: str, retention_s: int,
                  embedded_broker: bool) -> Settings:
    """Return the run's settings: own topics, group and namespace, and the scaled-down retention."""
    suffix = f"-soak-{run_id}"
    update: dict[str, Any] = {
        name: getattr(base, name) + suffix for name in Settings.model_fields if name.startswith("topic_")
    }
    update.update(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        redis_namespace=f"{base.redis_namespace}-soak-{run_id}",
        app_id=f"{base.app_id}{suffix}",
        lookback_click_s=retention_s,
        lookback_view_s=retention_s,
        dedup_horizon_s=retention_s,
        roi_windows_s=tuple(sorted({60, retention_s})),
        attribution_index_ttl_s=retention_s,
        referral_state_ttl_s=retention_s,
    )
    if embedded_broker:
        # As in `roitrack demo`: a group join on tansu takes about half the session
        # timeout, and the embedded broker speaks plain Kafka without authentication.
        update.update(
            consumer_session_timeout_s=6.0, consumer_heartbeat_s=1.0,
            kafka_security_protocol="PLAINTEXT", kafka_sasl_mechanism="", kafka_sasl_username="",
            kafka_sasl_password="", kafka_ssl_cafile="", kafka_ssl_certfile="", kafka_ssl_keyfile="",
        )
    # model_copy skips validation, so validate the result as a whole.
    return Settings.model_validate(base.model_copy(update=update).model_dump())


def reported_settings(settings: Settings) -> dict[str, Any]:
    """Return the settings that shape the soak's state and load, as the summary reports them."""
    names = ("lookback_click_s", "lookback_view_s", "dedup_horizon_s", "roi_windows_s", "attribution_index_ttl_s",
             "referral_state_ttl_s", "flood_window_s",
             "person_partitions", "campaign_partitions", "conversion_settle_s", "conversion_idle_release_s",
             "batch_max_events")
    return {name: getattr(settings, name) for name in names}


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "roitrack", "--log-level", "info", "worker"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log.warning("the worker (pid %d) did not stop within 30 s of SIGTERM; killing it", worker.pid)
        worker.kill()
        worker.wait()


def delete_namespace(client: SyncRedisClient, namespace: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def warm_up_clicks(settings: Settings, run_id: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Build one click per person partition, so the worker's first stored touchpoints show it owns them all."""
    events: list[tuple[bytes, dict[str, Any]]] = []
    covered: set[int] = set()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for number in itertools.count():
        person = f"warmup-{run_id}-{number}"
        partition = partition_for_key(person.encode(), settings.person_partitions)
        if partition in covered:
            continue
        covered.add(partition)
        event = {"type": "click", "event_id": f"{person}-click", "event_time": now, "user_id": person,
                 "campaign_id": "soak-01", "channel": "instagram", "source": "soak"}
        events.append((orjson.dumps(event), event))
        if len(covered) == settings.person_partitions:
            return events
    raise AssertionError("unreachable: itertools.count() never ends")


def source_revision() -> str:
    """Return the checked-out commit, with ``+changes`` when the work tree differs from it, or '' without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        log.warning("reading the git commit failed, so the summary has none: %r", exc)
        return ""
    return commit + ("+changes" if changed else "")
