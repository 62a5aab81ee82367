"""Helpers for tests that run the real worker against the real broker and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from kafka import KafkaConsumer, KafkaProducer

from roitrack.demo import settings_environment
from roitrack.settings import Settings
from streams.state import Keys

REPO_ROOT = Path(__file__).resolve().parent.parent

TOPIC_FIELDS = (
    "topic_touchpoints",
    "topic_conversions",
    "topic_campaigns",
    "topic_spend",
    "topic_credits",
    "topic_attributions",
    "topic_roi_updates",
    "topic_deal_events",
    "topic_dead_letters",
    "topic_alerts",
)


def unique_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings with their own topics, consumer group and Redis namespace."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "app_id": f"roitrack-test-{suffix}",
        "redis_namespace": f"rt-test-{suffix}",
        "consumer_session_timeout_s": 6.0,
        "consumer_heartbeat_s": 1.0,
        "person_partitions": 4,
        "campaign_partitions": 2,
        "roi_update_interval_s": 0.2,
        "conversion_settle_s": 1.0,
        # Long enough that a replay producer stalled by a busy machine does not look
        # like the end of the stream to the idle release.
        "conversion_idle_release_s": 5.0,
    }
    for name in TOPIC_FIELDS:
        values[name] = f"{Settings.model_fields[name].default}-{suffix}"
    values.update(overrides)
    return Settings(**values)


class WorkerProcess:
    """A `roitrack worker` child process with its output in a log file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str = "worker") -> None:
        self.settings = settings
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "WorkerProcess":
        env = {**os.environ, **settings_environment(self.settings), "PYTHONUNBUFFERED": "1"}
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roitrack", "--log-level", "info", "worker"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )
        handle.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop cleanly with SIGTERM; kill if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not stop within {timeout_s} s of SIGTERM; log: {self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def produce(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Produce (topic, key, value) messages and wait for all acknowledgements."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    count = 0
    try:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush()
    finally:
        producer.close()
    return count


def read_topic(settings: Settings, topic: str, idle_s: float = 2.0, max_wait_s: float = 60.0) -> list[dict[str, Any]]:
    """Read a whole topic from the beginning until it stays idle for ``idle_s``."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    values: list[dict[str, Any]] = []
    deadline = time.monotonic() + max_wait_s
    last_message = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            if batch:
                last_message = time.monotonic()
                for records in batch.values():
                    values.extend(orjson.loads(record.value) for record in records)
            elif time.monotonic() - last_message >= idle_s:
                break
    finally:
        consumer.close()
    return values


def latest_by_campaign(updates: Iterable[dict[str, Any]], window: str = "lifetime") -> dict[str, dict[str, Any]]:
    """Keep the highest-sequence update per campaign for one window."""
    latest: dict[str, dict[str, Any]] = {}
    for update in updates:
        if update["window"] != window:
            continue
        known = latest.get(update["campaign_id"])
        if known is None or update["sequence"] > known["sequence"]:
            latest[update["campaign_id"]] = update
    return latest


@dataclass
class PipelineStats:
    conversions_received: int = 0
    conversions_attributed: int = 0
    conversions_unattributed: int = 0
    touchpoints: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    consent_dropped: int = 0
    touchpoints_bot: int = 0
    touchpoints_ignored: int = 0
    clicks_flood: int = 0
    identity_links: int = 0

    @property
    def conversions_done(self) -> int:
        return self.conversions_attributed + self.conversions_unattributed


def pipeline_stats(settings: Settings) -> PipelineStats:
    """Sum the per-partition counters the attribution agent keeps in Redis."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    totals = {name: 0 for name in PipelineStats.__dataclass_fields__}
    try:
        for partition in range(settings.person_partitions):
            for name, value in client.hgetall(keys.person_stats(partition)).items():
                if name.decode() in totals:
                    totals[name.decode()] += int(value)
    finally:
        client.close()
    return PipelineStats(**totals)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, worker: WorkerProcess | None = None) -> None:
    """Poll ``condition`` until it holds, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None and not worker.running:
            raise AssertionError(f"worker exited while waiting for {what}; log:\n{worker.log_tail()}")
        time.sleep(0.25)
    tail = f"\nworker log:\n{worker.log_tail()}" if worker is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{tail}")


T0 = "2026-11-02T10:00:00Z"


def ids(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def click(person: str, campaign: str, at: str, event_id: str | None = None) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id or ids("click"), "event_time": at, "user_id": person,
            "campaign_id": campaign, "channel": "instagram"}


def view(person: str, campaign: str, at: str) -> dict[str, Any]:
    return {"type": "touch", "kind": "view", "event_id": ids("view"), "event_time": at, "user_id": person,
            "campaign_id": campaign, "channel": "tiktok"}


def purchase(person: str, at: str, amount: str = "10.00", **extra: Any) -> dict[str, Any]:
    return {"type": "purchase", "event_id": ids("purchase"), "event_time": at, "user_id": person,
            "order_id": ids("order"), "amount": amount, "currency": "EUR", **extra}


def send(settings: Settings, topic: str, key: str, value: Any) -> None:
    produce(settings, [(topic, key.encode(), value if isinstance(value, bytes) else orjson.dumps(value))])


def attribution_for(settings: Settings, conversion_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def arrived() -> bool:
        for attribution in read_topic(settings, settings.topic_attributions, idle_s=0.5, max_wait_s=10):
            if attribution["conversion_id"] == conversion_id:
                found.update(attribution)
                return True
        return False

    wait_for(arrived, 60, f"attribution of {conversion_id}")
    return found


def dead_letters_for(settings: Settings, marker: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [
            letter for letter in read_topic(settings, settings.topic_dead_letters, idle_s=0.5, max_wait_s=10)
            if marker in letter["payload"]
        ]
        return len(found) >= count

    wait_for(arrived, 60, f"{count} dead letter(s) containing {marker}")
    return found


