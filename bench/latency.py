"""Latency under a fixed input rate: from a purchase's production to the first RoiUpdate that includes it.

See docs/benchmarks.md for how the including update is found and which
purchases are measured.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import orjson

from bench.outputs import UpdateWatcher, credit_positions, percentile, read_topic, update_times
from bench.procinfo import load_average, peak_rss_bytes
from bench.scenarios import Harness, RunFailed
from bench.services import Child
from bench.workload import Workload, event_json, plan_workload
from roitrack.replay import Replayer, make_producer
from roitrack.topics import create_topics

_POLL_S = 0.1


def _wait_ready(child: Child, watcher: UpdateWatcher, timeout_s: float) -> None:
    """Wait for the RoiUpdates of the campaign definitions: the worker then consumes its topics."""
    deadline = time.monotonic() + timeout_s
    while not watcher.snapshot():
        if not child.running:
            raise RunFailed(f"the worker exited with status {child.process.returncode}; log:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RunFailed(f"the worker published no RoiUpdate within {timeout_s:.0f} s; log:\n{child.log_tail()}")
        time.sleep(_POLL_S)


def run_latency(
    harness: Harness, label: str, rate_per_s: float, duration_s: float, warmup_s: float, timeout_s: float,
    **overrides: Any,
) -> dict[str, Any]:
    """Produce live events at a fixed rate and measure purchase-to-RoiUpdate latency."""
    settings = harness.settings_for(label, None, **overrides)
    create_topics(settings)
    harness.produce_campaigns(settings)
    watcher = UpdateWatcher(settings).start()
    result_path = harness.work_dir / f"{settings.app_id}-w0.json"
    child = Child("bench.worker", [str(result_path)], settings, harness.log_path(settings, "worker"))
    workload = plan_workload(int(rate_per_s * duration_s), harness.campaign_ids, settings.person_partitions, seed=11)
    produced_s: dict[str, float] = {}
    load = load_average()

    try:
        _wait_ready(child, watcher, timeout_s)
        cpu = harness.cpu_window({"worker": [child.pid]})
        producer = make_producer(settings)
        try:
            replayer = Replayer(settings, producer, rate_per_s=rate_per_s)
            started_s = time.time()
            stats = replayer.replay(_live_events(workload, produced_s))
        finally:
            producer.close()
        produced_end_s = time.time()
        done = harness.wait_drained(settings, [child], workload.purchases, watcher, timeout_s)
        drained_s = time.time() - produced_end_s
        cpu_figures = cpu.close()
        peak_rss = peak_rss_bytes(child.pid)
        credits = read_topic(settings, settings.topic_credits, settings.campaign_partitions)
        updates = watcher.snapshot()
        published = update_times(credit_positions(credits), updates)
        attributed_s = {
            orjson.loads(record.value)["conversion_id"]: record.timestamp / 1000
            for record in read_topic(settings, settings.topic_attributions, settings.person_partitions)
        }
    finally:
        watcher.stop()
        harness.finish(settings, [child])

    # Purchases at the start meet a cold worker. Those in the last settle delay wait for
    # the idle release, because no later touchpoint follows them.
    window_end_s = started_s + stats.elapsed_s - settings.conversion_settle_s - 0.5
    measured = [
        event_id for event_id, at_s in produced_s.items()
        if started_s + warmup_s <= at_s <= window_end_s and event_id in published
    ]
    counted = sum(1 for at_s in produced_s.values() if started_s + warmup_s <= at_s <= window_end_s)
    if not counted:
        raise RunFailed(
            f"{label}: no purchase was produced inside the measuring window (after the {warmup_s} s warm-up "
            f"and before the last {settings.conversion_settle_s + 0.5} s); raise --live-duration"
        )
    if not measured:
        raise RunFailed(f"{label}: none of the {counted} purchases inside the measuring window has a RoiUpdate")
    latencies_ms = [(published[event_id] - produced_s[event_id]) * 1000 for event_id in measured]
    # The two hops: produce to Attribution (settle delay, release), Attribution to RoiUpdate (credits, throttle).
    to_attribution_ms = [(attributed_s[event_id] - produced_s[event_id]) * 1000
                         for event_id in measured if event_id in attributed_s]
    to_update_ms = [(published[event_id] - attributed_s[event_id]) * 1000
                    for event_id in measured if event_id in attributed_s]

    return {
        "rate_per_s": round(rate_per_s, 1),
        "achieved_rate_per_s": round(stats.events / stats.elapsed_s, 1),
        "duration_s": round(stats.elapsed_s, 3),
        "conversion_settle_s": settings.conversion_settle_s,
        "roi_update_interval_s": settings.roi_update_interval_s,
        "drain_after_produce_s": round(drained_s, 2),
        "purchases_measured": len(latencies_ms),
        "purchases_in_window": counted,
        "conversions_attributed": done["conversions_attributed"],
        "p50_ms": round(percentile(latencies_ms, 0.50), 1),
        "p99_ms": round(percentile(latencies_ms, 0.99), 1),
        "max_ms": round(max(latencies_ms), 1),
        "to_attribution_p50_ms": round(percentile(to_attribution_ms, 0.50), 1),
        "to_attribution_p99_ms": round(percentile(to_attribution_ms, 0.99), 1),
        "attribution_to_update_p50_ms": round(percentile(to_update_ms, 0.50), 1),
        "attribution_to_update_p99_ms": round(percentile(to_update_ms, 0.99), 1),
        # One lifetime RoiUpdate per campaign and publication: the cost of a short update interval.
        "lifetime_updates": len(updates),
        "lifetime_updates_per_s": round(len(updates) / (stats.elapsed_s + drained_s), 1),
        "peak_rss_bytes": peak_rss,
        "load_average_before": load,
        "cpu": cpu_figures,
    }


def _live_events(workload: Workload, produced_s: dict[str, float]) -> Iterator[tuple[bytes, Any]]:
    """Yield the workload's events stamped with the wall clock as each is produced."""
    for item in workload.items:
        now_s = time.time()
        if item.kind == "purchase":
            produced_s[item.event_id] = now_s
        event = event_json(item, now_s)
        yield orjson.dumps(event), event
