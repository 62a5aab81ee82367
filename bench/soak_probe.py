"""Measurements of a running pipeline for the soak benchmark: Redis counters, lag, memory.

Every read here is cheap except ``key_kinds``, and ``namespace_memory`` on a shared
Redis server, which visit every key of the namespace. ``Sample.sample_s`` records
how long a whole sample took.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from roitrack.connections import SyncRedisClient, kafka_python_config
from roitrack.settings import Settings
from streams.state import Keys

log = logging.getLogger(__name__)

#: Counters in ``<ns>:{pN}:stats`` that each count one input event the worker handled.
#: ``identity_links`` counts one per identify event as long as no conversion carries
#: both ids, which holds for the soak traffic.
EVENT_COUNTERS = (
    "touchpoints", "conversions_received", "duplicates", "identity_links", "consent_dropped",
    "touchpoints_bot", "touchpoints_ignored", "clicks_flood", "dead_letters",
)
_SCAN_PAGE = 1000
#: Kinds of keys of which there is one per person or per address: many small keys
#: of similar size. ``namespace_memory`` measures one in SAMPLE_EVERY of them and
#: every other key, so the few large per-partition keys never go unsampled.
SAMPLED_KINDS = frozenset({"p:tp", "p:alias", "flood"})
SAMPLE_EVERY = 10


@dataclass
class Counters:
    """The attribution agent's counters summed over all person partitions."""

    values: dict[str, int]
    pending: int

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    @property
    def processed_events(self) -> int:
        return sum(self.get(name) for name in EVENT_COUNTERS)

    @property
    def conversions_done(self) -> int:
        return self.get("conversions_attributed") + self.get("conversions_unattributed")


@dataclass
class Sample:
    """One row of the soak's samples; sizes are in bytes, times in seconds.

    ``worker_cpu_s`` is the worker's CPU time since it started, and ``load_1m`` the
    machine's one-minute load average, which shows how busy other processes keep
    the CPUs.

    On a Redis server of the run's own, ``namespace_keys`` is DBSIZE and
    ``redis_used_memory_bytes`` counts only the run, so ``namespace_bytes`` is not
    measured. On a shared server ``namespace_keys`` comes from SCAN and
    ``namespace_bytes`` is an estimate from MEMORY USAGE (see ``Probe.namespace_memory``);
    MEMORY USAGE leaves out Redis' own key tables, so it is below the share of
    used_memory that the keys take.
    """

    t_s: float
    phase: str
    produced_events: int
    produced_purchases: int
    processed_events: int
    backlog_events: int
    touchpoints: int
    conversions_received: int
    conversions_attributed: int
    conversions_unattributed: int
    duplicates: int
    pending_conversions: int
    input_lag_messages: int | None
    credits_lag_messages: int | None
    worker_rss_bytes: int | None
    worker_cpu_s: float | None
    broker_rss_bytes: int | None
    load_1m: float
    redis_used_memory_bytes: int
    namespace_keys: int
    namespace_bytes: int | None
    sample_s: float


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and the ids of all its descendants, from ``/proc/<pid>/task/<tid>/children`` (Linux only)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                stack.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int | None:
    """Return the resident set size (``VmRSS``) of a process and its descendants, or None when it is gone."""
    total = 0
    found = False
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                found = True
                break
    return total if found else None


def cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU seconds of a process and its descendants, or None when it is gone."""
    ticks = 0
    found = False
    for current in process_tree(pid):
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        # The command name in brackets may contain spaces, so split after the last ")".
        # utime and stime are fields 14 and 15 of proc(5), the 12th and 13th after it.
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
        found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


class Probe:
    """Reader of the pipeline's state for one run. It is not thread-safe, so each thread needs its own."""

    def __init__(self, settings: Settings, client: SyncRedisClient, *, own_server: bool) -> None:
        """``own_server``: the Redis server holds only this run's keys, so DBSIZE counts them."""
        self.settings = settings
        self.client = client
        self.own_server = own_server
        self.keys = Keys(settings.redis_namespace)
        self._consumer: KafkaConsumer | None = None
        person = range(settings.person_partitions)
        campaign = range(settings.campaign_partitions)
        self._input_partitions = [
            TopicPartition(topic, partition)
            for topic in (settings.topic_touchpoints, settings.topic_conversions)
            for partition in person
        ]
        self._credit_partitions = [TopicPartition(settings.topic_credits, partition) for partition in campaign]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def counters(self) -> Counters:
        """Sum the stats hashes and count the pending conversions of every person partition."""
        pipe = self.client.pipeline(transaction=False)
        for partition in range(self.settings.person_partitions):
            pipe.hgetall(self.keys.person_stats(partition))
            pipe.zcard(self.keys.pending(partition))
        replies = pipe.execute()
        totals: dict[str, int] = {}
        pending = 0
        for stats, waiting in zip(replies[0::2], replies[1::2]):
            for name, value in stats.items():
                text = name.decode() if isinstance(name, bytes) else str(name)
                totals[text] = totals.get(text, 0) + int(value)
            pending += int(waiting)
        return Counters(totals, pending)

    def _applied_offsets(self, tags: list[str]) -> dict[tuple[str, int], int]:
        """Return the last applied offset per (topic, partition) from the agents' offsets hashes."""
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hgetall(self.keys.offsets(tag))
        applied: dict[tuple[str, int], int] = {}
        for partition, fields in enumerate(pipe.execute()):
            for name, value in fields.items():
                text = name.decode() if isinstance(name, bytes) else str(name)
                if not text.startswith("_"):
                    applied[(text, partition)] = int(value)
        return applied

    def lags(self) -> tuple[int, int]:
        """Return (input lag, credits lag) in Kafka messages: the broker's end offsets minus the applied ones."""
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.settings.require_kafka().split(","),
                group_id=None,
                enable_auto_commit=False,
                **kafka_python_config(self.settings),
            )
        ends: dict[TopicPartition, int] = self._consumer.end_offsets(self._input_partitions + self._credit_partitions)
        person = self._applied_offsets(
            [self.keys.person_tag(partition) for partition in range(self.settings.person_partitions)]
        )
        campaign = self._applied_offsets(
            [self.keys.campaign_tag(partition) for partition in range(self.settings.campaign_partitions)]
        )

        def behind(partitions: list[TopicPartition], applied: dict[tuple[str, int], int]) -> int:
            return sum(
                max(0, ends.get(tp, 0) - (applied.get((tp.topic, tp.partition), -1) + 1)) for tp in partitions
            )

        return behind(self._input_partitions, person), behind(self._credit_partitions, campaign)

    def used_memory(self) -> int:
        info: dict[str, Any] = self.client.info("memory")
        return int(info["used_memory"])

    def namespace_memory(self) -> tuple[int, int | None]:
        """Return (keys, estimated bytes) of the namespace; see ``Sample`` for the two modes."""
        if self.own_server:
            return int(self.client.dbsize()), None
        keys = 0
        estimate = 0
        sampled = 0
        cursor = 0
        pattern = f"{self.settings.redis_namespace}:*"
        while True:
            cursor, page = self.client.scan(cursor=cursor, match=pattern, count=_SCAN_PAGE)
            measured: list[tuple[bytes | str, int]] = []
            for key in page:
                name = key.decode() if isinstance(key, bytes) else str(key)
                if key_kind(self.settings.redis_namespace, name) not in SAMPLED_KINDS:
                    measured.append((key, 1))
                    continue
                if sampled % SAMPLE_EVERY == 0:
                    measured.append((key, SAMPLE_EVERY))
                sampled += 1
            if measured:
                pipe = self.client.pipeline(transaction=False)
                for key, _ in measured:
                    pipe.memory_usage(key)
                # A key that expired between SCAN and MEMORY USAGE returns None.
                estimate += sum(
                    int(size) * weight for (_, weight), size in zip(measured, pipe.execute()) if size is not None
                )
            keys += len(page)
            if cursor == 0:
                return keys, estimate

    def campaign_last_touch_conversions(self) -> int | None:
        """Sum the lifetime last-touch conversions of every campaign aggregate.

        Returns None when an indexed aggregate is missing. Last touch credits a whole
        conversion to one campaign, so the sum equals ``conversions_attributed`` once
        the ROI agent has applied every credit.
        """
        total = Decimal(0)
        for partition in range(self.settings.campaign_partitions):
            members = self.client.smembers(self.keys.campaign_index(partition))
            for member in members:
                campaign_id = member.decode() if isinstance(member, bytes) else str(member)
                raw = self.client.get(self.keys.campaign(partition, campaign_id))
                if raw is None:
                    return None
                total += Decimal(orjson.loads(raw).get("life", {}).get("c", {}).get("last_touch", "0"))
        return int(total) if total == total.to_integral_value() else None


def take_sample(
    probe: Probe,
    *,
    t_s: float,
    phase: str,
    produced_events: int,
    produced_purchases: int,
    worker_pid: int | None,
    broker_pid: int | None,
) -> Sample:
    """Read every measurement once and return them as a Sample."""
    started = time.monotonic()
    counters = probe.counters()
    input_lag: int | None
    credits_lag: int | None
    try:
        input_lag, credits_lag = probe.lags()
    except KafkaError as exc:
        # The lag columns are optional: the counters still measure the backlog in events.
        log.warning("reading the end offsets failed, so this sample has no lag: %r", exc)
        input_lag = credits_lag = None
    keys, size = probe.namespace_memory()
    return Sample(
        t_s=round(t_s, 3),
        phase=phase,
        produced_events=produced_events,
        produced_purchases=produced_purchases,
        processed_events=counters.processed_events,
        backlog_events=produced_events - counters.processed_events,
        touchpoints=counters.get("touchpoints"),
        conversions_received=counters.get("conversions_received"),
        conversions_attributed=counters.get("conversions_attributed"),
        conversions_unattributed=counters.get("conversions_unattributed"),
        duplicates=counters.get("duplicates"),
        pending_conversions=counters.pending,
        input_lag_messages=input_lag,
        credits_lag_messages=credits_lag,
        worker_rss_bytes=None if worker_pid is None else rss_bytes(worker_pid),
        worker_cpu_s=None if worker_pid is None else cpu_seconds(worker_pid),
        broker_rss_bytes=None if broker_pid is None else rss_bytes(broker_pid),
        load_1m=round(os.getloadavg()[0], 2),
        redis_used_memory_bytes=probe.used_memory(),
        namespace_keys=keys,
        namespace_bytes=size,
        sample_s=round(time.monotonic() - started, 3),
    )


def key_kind(namespace: str, key: str) -> str:
    """Name the kind of a namespace key: ``p:tp`` for ``<ns>:{p3}:tp:<person>``, ``flood`` for a flood set."""
    parts = key[len(namespace) + 1:].split(":")
    if parts[0].startswith("{p") and len(parts) > 1:
        return f"p:{parts[1]}"
    if parts[0].startswith("{c") and len(parts) > 1:
        return f"c:{parts[1]}"
    return parts[0]


def key_kinds(client: SyncRedisClient, namespace: str) -> dict[str, dict[str, int]]:
    """Count the namespace's keys per kind, and those of each kind without an expiry."""
    kinds: dict[str, dict[str, int]] = {}
    cursor = 0
    while True:
        cursor, page = client.scan(cursor=cursor, match=f"{namespace}:*", count=_SCAN_PAGE)
        if page:
            pipe = client.pipeline(transaction=False)
            for key in page:
                pipe.pttl(key)
            for key, ttl_ms in zip(page, pipe.execute()):
                name = key.decode() if isinstance(key, bytes) else str(key)
                entry = kinds.setdefault(key_kind(namespace, name), {"keys": 0, "without_ttl": 0})
                entry["keys"] += 1
                # PTTL returns -1 for a key without an expiry and -2 for one that is gone.
                if int(ttl_ms) == -1:
                    entry["without_ttl"] += 1
        if cursor == 0:
            return dict(sorted(kinds.items()))


def machine_facts() -> dict[str, Any]:
    """Describe the machine: CPUs, CPU model, memory and load average (Linux /proc)."""
    facts: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["memory_bytes"] = int(line.split()[1]) * 1024
                break
    except OSError as exc:
        log.warning("reading /proc for the machine facts failed: %r", exc)
    facts["load_average"] = [round(value, 2) for value in os.getloadavg()]
    return facts
