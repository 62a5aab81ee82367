"""``roitrack demo``: replay the journey dataset end to end and show ROI live.

On the embedded default (ROITRACK_KAFKA_BOOTSTRAP empty) it starts a tansu
broker, and a redis-server when no Redis replies at the Redis URL. With a broker
and Redis configured, it starts neither. Either way it creates run-scoped
topics, a fresh Redis namespace and consumer group, so repeated runs never
mix their counts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from roitrack.connections import SyncRedisClient, kafka_python_config, sync_redis_client
from roitrack.embedded import EmbeddedBroker, LocalRedis
from roitrack.replay import Replayer, campaign_events, make_producer, read_events
from roitrack.settings import ENV_PREFIX, Settings, load_settings
from roitrack.topics import create_topics
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    summary_path: Path | None
    batch_size: int
    rate_per_s: float
    keep_state: bool
    timeout_s: float
    journeys: Path
    campaigns: Path


def settings_environment(settings: Settings) -> dict[str, str]:
    """Render settings as ROITRACK_* variables for a child process."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (frozenset, tuple, list)):
            text = ",".join(str(part) for part in sorted(value))
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


class RoiBoard:
    """Latest lifetime RoiUpdate per campaign, and every deal event, read from their topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: dict[str, dict[str, Any]] = {}
        self.deal_events: dict[str, dict[str, Any]] = {}
        self.updates = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roi-board", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = KafkaConsumer(
            self.settings.topic_roi_updates,
            self.settings.topic_deal_events,
            bootstrap_servers=self.settings.require_kafka().split(","),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **kafka_python_config(self.settings),
        )
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._apply(orjson.loads(record.value))
        finally:
            consumer.close()

    def _apply(self, update: dict[str, Any]) -> None:
        if update.get("type") in ("deal_activated", "deal_expired", "advocate_reward"):
            with self._lock:
                # Repeated deal events carry the same event id.
                self.deal_events[update["event_id"]] = update
            return
        if update.get("window") != "lifetime":
            return
        with self._lock:
            self.updates += 1
            known = self.latest.get(update["campaign_id"])
            # Drop stale or repeated updates by their per-campaign sequence number.
            if known is None or update["sequence"] > known["sequence"]:
                self.latest[update["campaign_id"]] = update

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.latest)

    def deal_event_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.deal_events.values(), key=lambda event: (event["deal_id"], event["type"], event["event_id"]))

    def attributed_conversions(self) -> Decimal:
        return sum(
            (Decimal(update["models"][DEFAULT_MODEL]["conversions"]) for update in self.snapshot().values()),
            Decimal(0),
        )


def roi_table(board: RoiBoard, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("campaign", "spend", "conversions", "revenue", "ROAS", "ROI", "CPA"):
        table.add_column(column, justify="left" if column == "campaign" else "right")
    for campaign_id, update in sorted(board.snapshot().items()):
        figures = update["models"][DEFAULT_MODEL]
        table.add_row(
            update.get("campaign_name") or campaign_id,
            _money(update["spend"]),
            _count(figures["conversions"]),
            _money(figures["revenue"]),
            _number(figures["roas"], 2),
            _percent(figures["roi"]),
            _money(figures["cpa"]),
        )
    return table


def _number(text: str | None, places: int) -> str:
    return "-" if text is None else f"{Decimal(text):,.{places}f}"


def _count(text: str) -> str:
    """Whole counts without decimals; fractional ones (linear, time decay) with two."""
    value = Decimal(text)
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def _money(text: str | None) -> str:
    return _number(text, 2)


def _percent(text: str | None) -> str:
    return "-" if text is None else f"{Decimal(text) * 100:,.1f}%"


def _conversions_done(client: SyncRedisClient, settings: Settings) -> int:
    from streams.state import Keys

    keys = Keys(settings.redis_namespace)
    pipe = client.pipeline(transaction=False)
    for partition in range(settings.person_partitions):
        pipe.hmget(keys.person_stats(partition), ["conversions_attributed", "conversions_unattributed"])
    total = 0
    for values in pipe.execute():
        total += sum(int(value) for value in values if value is not None)
    return total


def _attributed_conversions(client: SyncRedisClient, settings: Settings) -> int:
    from streams.state import Keys

    keys = Keys(settings.redis_namespace)
    pipe = client.pipeline(transaction=False)
    for partition in range(settings.person_partitions):
        pipe.hget(keys.person_stats(partition), "conversions_attributed")
    return sum(int(value) for value in pipe.execute() if value is not None)


def build_summary(board: RoiBoard, extra: dict[str, Any]) -> dict[str, Any]:
    """Summarise the final lifetime updates: per model and campaign, and per campaign."""
    latest = board.snapshot()
    models: dict[str, dict[str, dict[str, str]]] = {model: {} for model in ATTRIBUTION_MODELS}
    campaigns: dict[str, dict[str, Any]] = {}
    for campaign_id, update in sorted(latest.items()):
        for model in ATTRIBUTION_MODELS:
            figures = update["models"][model]
            models[model][campaign_id] = {"conversions": figures["conversions"], "revenue": figures["revenue"]}
        campaigns[campaign_id] = {
            "name": update.get("campaign_name"),
            "spend": update["spend"],
            "margin": update["margin"],
            "roi": {model: update["models"][model]["roi"] for model in ATTRIBUTION_MODELS},
            "roas": {model: update["models"][model]["roas"] for model in ATTRIBUTION_MODELS},
            "cpa": {model: update["models"][model]["cpa"] for model in ATTRIBUTION_MODELS},
            "sequence": update["sequence"],
        }
    return {**extra, "currency": next(iter(latest.values()))["currency"] if latest else None,
            "default_model": DEFAULT_MODEL, "models": models, "campaigns": campaigns}


def _delete_namespace(client: SyncRedisClient, namespace: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


@dataclass(frozen=True)
class DemoServices:
    """The broker, Redis namespace, topics and worker of one demo run."""

    settings: Settings
    client: SyncRedisClient
    worker: "subprocess.Popen[bytes]"
    worker_dir: Path
    worker_log: Path


def start_services(stack: ExitStack, console: Console, keep_state: bool) -> DemoServices:
    """Start or reach the broker and Redis, create run-scoped topics and start a worker.

    Everything started is stopped, and the run's Redis keys deleted unless
    ``keep_state``, when ``stack`` closes.
    """
    base = load_settings()
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    overrides: dict[str, Any] = {}
    bootstrap = base.kafka_bootstrap
    if not bootstrap:
        console.print("starting the embedded Kafka broker (tansu) ...")
        broker = EmbeddedBroker()
        bootstrap = broker.start()
        stack.callback(broker.stop)
        # A group join on tansu takes about half the session timeout.
        overrides.update(consumer_session_timeout_s=6.0, consumer_heartbeat_s=1.0)
        # The embedded broker listens in plain text without authentication.
        overrides.update(
            kafka_security_protocol="PLAINTEXT", kafka_sasl_mechanism="", kafka_sasl_username="",
            kafka_sasl_password="", kafka_ssl_cafile="", kafka_ssl_certfile="", kafka_ssl_keyfile="",
        )
        console.print(f"  broker on {bootstrap}")
    local_redis = LocalRedis()
    redis_url = local_redis.ensure(base.redis_url, ssl_cafile=base.redis_ssl_cafile)
    stack.callback(local_redis.stop)
    if local_redis.started:
        # The local server is standalone and without TLS.
        overrides.update(redis_cluster=False, redis_ssl_cafile="")
    console.print(f"Redis: {'started a local redis-server' if local_redis.started else 'using the configured server'}")

    suffix = f"-demo-{run_id}"
    topic_overrides = {
        name: getattr(base, name) + suffix for name in Settings.model_fields if name.startswith("topic_")
    }
    settings = base.model_copy(update={
        **overrides, **topic_overrides,
        "kafka_bootstrap": bootstrap,
        "redis_url": redis_url,
        "redis_namespace": f"{base.redis_namespace}-demo-{run_id}",
        "app_id": f"{base.app_id}{suffix}",
    })
    created = create_topics(settings, bootstrap)
    console.print(f"created {len(created)} topics with suffix {suffix}")

    client = sync_redis_client(settings)
    stack.callback(client.close)
    if not keep_state:
        stack.callback(_delete_namespace, client, settings.redis_namespace)

    worker_dir = Path(tempfile.mkdtemp(prefix="roitrack-demo-"))
    worker_log = worker_dir / "worker.log"
    log_handle = worker_log.open("wb")
    stack.callback(log_handle.close)
    env = {**os.environ, **settings_environment(settings)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "roitrack", "--log-level", "info", "worker"],
        env=env, stdout=log_handle, stderr=subprocess.STDOUT,
    )
    stack.callback(_stop_worker, worker, console)
    console.print(f"worker started (pid {worker.pid}); log: {worker_log}")

    return DemoServices(settings, client, worker, worker_dir, worker_log)


def run_demo(options: DemoOptions) -> int:
    console = Console()
    started = time.monotonic()

    with ExitStack() as stack:
        services = start_services(stack, console, options.keep_state)
        settings, client, worker, worker_log = (
            services.settings, services.client, services.worker, services.worker_log,
        )
        board = RoiBoard(settings)
        board.start()
        stack.callback(board.stop)

        console.print(f"reading {options.journeys.name} ...")
        events = list(read_events(options.journeys))
        campaigns = list(campaign_events(options.campaigns))
        total_events = len(events) + len(campaigns)
        progress = Progress(
            TextColumn("[bold]replay[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        )
        task = progress.add_task("replay", total=total_events, rate="")
        producer = make_producer(settings)
        stack.callback(producer.close)
        replay_started = time.monotonic()
        counted = 0

        def advance(count: int) -> None:
            nonlocal counted
            counted += count
            if counted % 5000 == 0 or counted == total_events:
                elapsed_s = time.monotonic() - replay_started
                progress.update(task, completed=counted, rate=f"{counted / max(elapsed_s, 1e-9):,.0f} events/s")

        replayer = Replayer(settings, producer, batch_size=options.batch_size,
                            rate_per_s=options.rate_per_s, on_progress=advance)
        expected_conversions = sum(
            1 for _, event in events
            if isinstance(event, dict) and event.get("type") in ("purchase", "coupon_redemption")
        )

        with Live(Group(progress, roi_table(board, "ROI per campaign (last touch, lifetime)")),
                  console=console, refresh_per_second=4) as live:
            def refresh(status: str) -> None:
                live.update(Group(progress, roi_table(board, f"ROI per campaign (last touch, lifetime) - {status}")))

            ticker_stop = threading.Event()

            def tick() -> None:
                while not ticker_stop.wait(0.5):
                    refresh("replaying")

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                replayer.replay(campaigns)
                replayer.replay(events)
            finally:
                ticker_stop.set()
                ticker.join()
            replay_s = time.monotonic() - replay_started
            progress.update(task, completed=total_events)

            deadline = time.monotonic() + options.timeout_s
            done = attributed = 0
            while True:
                if worker.poll() is not None:
                    console.print(f"[red]the worker exited with code {worker.returncode}; see {worker_log}[/]")
                    return 1
                done = _conversions_done(client, settings)
                attributed = _attributed_conversions(client, settings)
                shown = board.attributed_conversions()
                refresh(f"attributed {done:,}/{expected_conversions:,} conversions")
                if done >= expected_conversions and shown == attributed:
                    break
                if time.monotonic() > deadline:
                    console.print(
                        f"[red]timed out after {options.timeout_s:.0f} s: {done} of {expected_conversions} "
                        f"conversions attributed. Raise --timeout, or see the worker log {worker_log}[/]"
                    )
                    return 1
                time.sleep(0.5)
            refresh("done")
        console.print()

        wall_s = time.monotonic() - started
        pipeline_s = time.monotonic() - replay_started
        console.print(
            f"replayed {total_events:,} events in {replay_s:.1f} s; all {done:,} conversions attributed "
            f"{pipeline_s:.1f} s after the replay started ({total_events / pipeline_s:,.0f} events/s end to end); "
            f"demo wall time {wall_s:.1f} s"
        )
        if options.summary_path is not None:
            summary = build_summary(board, {
                "dataset": options.journeys.name,
                "events": total_events,
                "conversions": expected_conversions,
                "conversions_attributed": attributed,
                "replay_s": round(replay_s, 3),
                "pipeline_s": round(pipeline_s, 3),
                "events_per_s": round(total_events / pipeline_s, 1),
                "wall_time_s": round(wall_s, 3),
            })
            options.summary_path.parent.mkdir(parents=True, exist_ok=True)
            options.summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
            console.print(f"summary written to {options.summary_path}")
    return 0


def _stop_worker(worker: "subprocess.Popen[bytes]", console: Console) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        console.print("[yellow]the worker did not stop within 30 s of SIGTERM; killing it[/]")
        worker.kill()
        worker.wait()
