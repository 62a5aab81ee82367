"""The backlog runs: each starts its processes, waits for its end condition, and returns its figures.

Every run gets its own consumer group, Redis namespace and output topics, and
deletes its Redis keys and stops its processes when it ends, also on failure.
Backlog runs share the input topics of their message mode, so all consumers
read the same messages. The latency runs are in ``bench.latency``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from bench.outputs import UpdateWatcher, completion_time
from bench.procinfo import CpuWindow, load_average, peak_rss_bytes, read_result
from bench.services import Child, delete_namespace
from bench.workload import Workload, backlog_events
from roitrack.replay import Replayer, campaign_events, make_producer
from roitrack.settings import Settings
from roitrack.topics import create_topics
from streams.state import Keys

log = logging.getLogger(__name__)

CAMPAIGNS_FILE = Path(__file__).resolve().parent.parent / "roitrack" / "data" / "campaigns.toml"
OUTPUT_TOPIC_FIELDS = (
    "topic_campaigns", "topic_spend", "topic_credits", "topic_attributions", "topic_roi_updates", "topic_dead_letters",
)
#: Backlog event times end this long before the wall clock, well inside the allowed lateness.
BACKLOG_END_BEFORE_NOW_S = 600.0
_POLL_S = 0.1


class RunFailed(RuntimeError):
    """A measured run did not reach its end condition."""


@dataclass(frozen=True)
class Inputs:
    """Input topics holding one produced workload."""

    touchpoints: str
    conversions: str
    events: int
    messages: int
    purchases: int
    produce_s: float


def progress(message: str) -> None:
    """Print one progress line with the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Harness:
    """Shared state of one benchmark invocation: services, base settings and the work folder."""

    def __init__(self, base: Settings, work_dir: Path, service_pids: dict[str, list[int]], redis_dedicated: bool) -> None:
        self.base = base
        self.work_dir = work_dir
        self.service_pids = service_pids
        self.redis_dedicated = redis_dedicated
        self.run_id = time.strftime("%H%M%S") + uuid.uuid4().hex[:4]
        self.campaign_ids = [event["campaign_id"] for _, event in campaign_events(CAMPAIGNS_FILE)
                             if event.get("type") == "campaign"]
        self._runs = 0

    # --- settings and inputs --------------------------------------------

    def settings_for(self, label: str, inputs: Inputs | None, **overrides: Any) -> Settings:
        """Settings of one run: its own group, namespace, output topics and Faust data folder."""
        self._runs += 1
        suffix = f"{self.run_id}-{self._runs}-{label}"
        values: dict[str, Any] = {
            name: f"{Settings.model_fields[name].default}-{suffix}" for name in OUTPUT_TOPIC_FIELDS
        }
        if inputs is None:
            values["topic_touchpoints"] = f"touchpoints-{suffix}"
            values["topic_conversions"] = f"conversions-{suffix}"
        else:
            values["topic_touchpoints"] = inputs.touchpoints
            values["topic_conversions"] = inputs.conversions
        # Short, like the default namespace "roitrack", because key names count in Redis memory.
        values["redis_namespace"] = f"rb{self.run_id[-4:]}{self._runs}"
        values["app_id"] = f"bench-{suffix}"
        data_dir = self.work_dir / f"faust-{self._runs}"
        data_dir.mkdir()
        values["data_dir"] = str(data_dir)
        values.update(overrides)
        return self.base.model_copy(update=values)

    def produce_backlog(self, label: str, workload: Workload, batch_size: int) -> Inputs:
        """Create input topics for one message mode and produce the whole workload into them."""
        settings = self.settings_for(label, None)
        create_topics(settings)
        producer = make_producer(settings)
        try:
            replayer = Replayer(settings, producer, batch_size=batch_size)
            start_epoch_s = time.time() - BACKLOG_END_BEFORE_NOW_S - workload.span_s
            stats = replayer.replay(backlog_events(workload, start_epoch_s))
        finally:
            producer.close()
        return Inputs(settings.topic_touchpoints, settings.topic_conversions, stats.events, stats.messages,
                      workload.purchases, round(stats.elapsed_s, 3))

    def produce_campaigns(self, settings: Settings) -> None:
        producer = make_producer(settings)
        try:
            Replayer(settings, producer).replay(campaign_events(CAMPAIGNS_FILE))
        finally:
            producer.close()

    # --- helpers ---------------------------------------------------------

    def log_path(self, settings: Settings, name: str) -> Path:
        return self.work_dir / f"{settings.app_id}-{name}.log"

    def cpu_window(self, children: dict[str, list[int]]) -> CpuWindow:
        return CpuWindow.open({**self.service_pids, **children, "harness": [os.getpid()]})

    @staticmethod
    def wait_result(child: Child, path: Path, timeout_s: float, field: str = "first_s") -> dict[str, Any]:
        """Wait until the child's result file contains ``field``."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = read_result(path)
            if result is not None and field in result:
                return result
            if not child.running:
                raise RunFailed(f"{child.module} exited with status {child.process.returncode}; log:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise RunFailed(f"{child.module} gave no result within {timeout_s:.0f} s; log:\n{child.log_tail()}")
            time.sleep(_POLL_S)

    def finish(self, settings: Settings, children: list[Child]) -> None:
        for child in children:
            child.stop()
        delete_namespace(settings.redis_url, settings.redis_namespace)

    # --- consumers of the backlog -----------------------------------------

    def run_consumer(self, kind: str, inputs: Inputs, timeout_s: float) -> dict[str, Any]:
        """Run one comparison consumer over a backlog: ``raw`` aiokafka, ``noop`` Faust agent, or ``table`` baseline."""
        settings = self.settings_for(kind, inputs)
        if kind == "table":
            create_topics(settings)  # the baseline's credits topic
        module, expected = {
            "raw": ("bench.raw_consumer", inputs.messages),
            "noop": ("bench.noop_app", inputs.events),
            "table": ("bench.table_app", inputs.purchases),
        }[kind]
        result_path = self.work_dir / f"{settings.app_id}.json"

        load = load_average()
        child = Child(module, [str(result_path), str(expected)], settings, self.log_path(settings, kind))
        try:
            if kind != "raw":  # the raw consumer writes its result only at the end
                self.wait_result(child, result_path, timeout_s, "first_s")
            cpu = self.cpu_window({"consumer": [child.pid]})
            result = self.wait_result(child, result_path, timeout_s, "last_s")
            peak_rss = peak_rss_bytes(child.pid)
            cpu_figures = cpu.close()
        finally:
            self.finish(settings, [child])

        seconds = result["last_s"] - result["first_s"]
        figures: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "events_per_s": round(inputs.events / seconds, 1),
            "events_per_cpu_s": _per_cpu_s(inputs.events, cpu_figures["consumer_cpu_s"]),
            "messages_per_s": round(inputs.messages / seconds, 1),
            "peak_rss_bytes": peak_rss,
            "load_average_before": load,
            "cpu": cpu_figures,
        }
        if kind == "noop":
            figures["batches"] = result["batches"]
        if kind == "table":
            figures["credited"] = result["credited"]
            figures["unattributed"] = result["unattributed"]
            figures["conversions"] = result["conversions"]
        return figures

    # --- the roitrack worker ----------------------------------------------

    def run_worker(
        self,
        label: str,
        inputs: Inputs,
        expected: Workload,
        timeout_s: float,
        workers: int = 1,
        profile_path: Path | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Drain a backlog with roitrack workers: from the first batch to the RoiUpdate that completes the counts."""
        settings = self.settings_for(label, inputs, **overrides)
        create_topics(settings)
        self.produce_campaigns(settings)
        client = redis.Redis.from_url(settings.redis_url)
        used_before = int(client.info("memory")["used_memory"])

        watcher = UpdateWatcher(settings).start()
        load = load_average()
        result_paths = [self.work_dir / f"{settings.app_id}-w{number}.json" for number in range(workers)]
        children = [
            Child("bench.worker", [str(path)], settings, self.log_path(settings, f"worker{number}"))
            for number, path in enumerate(result_paths)
        ]
        spy: subprocess.Popen[bytes] | None = None

        try:
            self._wait_any_started(children, result_paths, timeout_s)
            cpu = self.cpu_window({"worker": [child.pid for child in children]})
            if profile_path is not None:
                spy = _start_py_spy(children[0].pid, profile_path)
            done = self.wait_drained(settings, children, inputs.purchases, watcher, timeout_s)
            attributed = done["conversions_attributed"]
            end_s = completion_time(watcher.snapshot(), Decimal(attributed))
            starts = [float(result["first_s"]) for result in map(read_result, result_paths) if result]
            peak_rss = [peak_rss_bytes(child.pid) for child in children]
            memory = self._memory(client, settings, used_before, done["touchpoints"])
            cpu_figures = cpu.close()
            if spy is not None:
                _stop_py_spy(spy)
                spy = None
            conversions = {campaign: int(value) for campaign, value in watcher.conversions().items() if value}
        finally:
            if spy is not None:
                _stop_py_spy(spy)
            watcher.stop()
            client.close()
            self.finish(settings, children)

        if end_s is None:
            raise RunFailed(f"{label}: the RoiUpdates never added up to {attributed} conversions")
        seconds = end_s - min(starts)
        batches = [read_result(path) or {} for path in result_paths]
        return {
            "workers": workers,
            "seconds": round(seconds, 3),
            "events_per_s": round(inputs.events / seconds, 1),
            "events_per_cpu_s": _per_cpu_s(inputs.events, cpu_figures["worker_cpu_s"]),
            "messages_per_s": round(inputs.messages / seconds, 1),
            "seconds_after_last_worker_started": round(end_s - max(starts), 3),
            "conversions_attributed": attributed,
            "conversions_unattributed": done["conversions_unattributed"],
            "matches_expected": conversions == dict(expected.expected_conversions),
            "peak_rss_bytes": peak_rss,
            "partition_assignments": [_count_assignments(child.log_path) for child in children],
            "attribution_batches": [int(stats.get("batches", 0)) for stats in batches],
            "attribution_records": [int(stats.get("records", 0)) for stats in batches],
            "attribution_handler_s": [round(float(stats.get("handler_s", 0.0)), 3) for stats in batches],
            "memory": memory,
            "load_average_before": load,
            "cpu": cpu_figures,
        }

    @staticmethod
    def _wait_any_started(children: list[Child], paths: list[Path], timeout_s: float) -> None:
        """Wait until one of the workers has handed its first batch to the attribution processor."""
        deadline = time.monotonic() + timeout_s
        while not any(read_result(path) for path in paths):
            for child in children:
                if not child.running:
                    raise RunFailed(f"a worker exited with status {child.process.returncode}; log:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise RunFailed(f"no worker got a batch within {timeout_s:.0f} s; log:\n{children[0].log_tail()}")
            time.sleep(0.02)

    def wait_drained(
        self, settings: Settings, children: list[Child], purchases: int, watcher: UpdateWatcher, timeout_s: float
    ) -> dict[str, int]:
        """Wait until every purchase is attributed or unattributed and the RoiUpdates include them all."""
        deadline = time.monotonic() + timeout_s
        stats: dict[str, int] = {}
        while time.monotonic() < deadline:
            for child in children:
                if not child.running:
                    raise RunFailed(f"a worker exited with status {child.process.returncode}; log:\n{child.log_tail()}")
            stats = person_stats(settings)
            finished = stats["conversions_attributed"] + stats["conversions_unattributed"]
            if finished >= purchases and watcher.total_conversions() >= stats["conversions_attributed"]:
                return stats
            time.sleep(_POLL_S)
        raise RunFailed(
            f"timed out after {timeout_s:.0f} s with counters {stats} and RoiUpdates adding up to "
            f"{watcher.total_conversions()} of {purchases} purchases; worker log:\n{children[0].log_tail()}"
        )

    def _memory(self, client: redis.Redis, settings: Settings, used_before: int, touchpoints: int) -> dict[str, Any]:
        """Measure the Redis memory of the run's state: per stored touchpoint, and for everything."""
        used_after = int(client.info("memory")["used_memory"])
        touch_bytes = all_bytes = touch_keys = 0
        keys = list(client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000))
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            for key, size in zip(chunk, pipe.execute()):
                all_bytes += int(size or 0)
                if b":tp:" in key:
                    touch_bytes += int(size or 0)
                    touch_keys += 1
        per_touch = round(touch_bytes / touchpoints, 1) if touchpoints else None
        return {
            "touchpoints_stored": touchpoints,
            "touchpoint_keys": touch_keys,
            "touchpoint_key_bytes": touch_bytes,
            "bytes_per_touchpoint": per_touch,
            "namespace_bytes": all_bytes,
            "namespace_bytes_per_touchpoint": round(all_bytes / touchpoints, 1) if touchpoints else None,
            "used_memory_delta": used_after - used_before,
            "used_memory_delta_per_touchpoint": round((used_after - used_before) / touchpoints, 1) if touchpoints else None,
            "used_memory_delta_is_own": self.redis_dedicated,
        }


def _per_cpu_s(events: int, cpu_s: float) -> float | None:
    """Events per CPU second of the measured process: a rate that other work on the machine affects less."""
    return round(events / cpu_s, 1) if cpu_s > 0 else None


def person_stats(settings: Settings) -> dict[str, int]:
    """Sum the attribution counters over every person partition."""
    keys = Keys(settings.redis_namespace)
    client = redis.Redis.from_url(settings.redis_url)
    totals = {"touchpoints": 0, "conversions_received": 0, "conversions_attributed": 0,
              "conversions_unattributed": 0, "dead_letters": 0, "duplicates": 0}
    try:
        pipe = client.pipeline(transaction=False)
        for partition in range(settings.person_partitions):
            pipe.hmget(keys.person_stats(partition), list(totals))
        for values in pipe.execute():
            for name, value in zip(list(totals), values):
                totals[name] += int(value or 0)
    finally:
        client.close()
    return totals


def _count_assignments(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count("partitions assigned")
    except OSError:
        return 0


def _start_py_spy(pid: int, raw_path: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists():
        raise RunFailed(f"py-spy is not installed at {binary}; run `make bench`, which installs it, or pass --no-profile")
    with raw_path.with_suffix(".log").open("wb") as errors:
        return subprocess.Popen(
            [str(binary), "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--nolineno",
             "--format", "raw", "--output", str(raw_path)],
            stdout=subprocess.DEVNULL, stderr=errors,
        )


def _stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    """Stop py-spy with SIGINT, which makes it write its output file."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
