"""``python -m bench.collector``: what the collector's packing window does to requests and to the worker.

For each packing window (``ROITRACK_COLLECTOR_PACK_WITHIN_S``) it starts
``roitrack collector`` as a child process on fresh topics and sends it the
bench workload, one event per HTTP request (``POST /v1/events``), from
``--concurrency`` connections at once, as many clients sending one event each
would: as fast as they go, or at ``--rate`` requests per second. It records the
requests per second, their latency, the collector's CPU time and how many Kafka
messages the events took. Then a roitrack worker drains
the topics the collector wrote, measured as ``make bench`` measures its backlog
runs, so the figures show what packing saves the worker.

The HTTP client runs in this process on the same cores, so it limits the
request rate as much as the collector does. Every window gets the same client.
Results go to ``--out`` (default artifacts/bench-collector) as results.json,
and a table is printed. docs/benchmarks.md has the method and a run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.procinfo import load_average
from bench.run import machine_info, open_harness
from bench.scenarios import BACKLOG_END_BEFORE_NOW_S, Harness, Inputs, RunFailed, progress
from bench.services import Child, exit_on_sigterm
from bench.workload import Workload, backlog_events, plan_workload
from roitrack.embedded import free_port
from roitrack.settings import Settings
from roitrack.topics import create_topics

DEFAULT_WINDOWS = (0.0, 0.005, 0.02)
_START_TIMEOUT_S = 30.0
_PROGRESS_EVERY_S = 5.0
#: The smallest workload bench.workload.plan_workload plans.
MIN_EVENTS = 10


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.collector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000, help="events in the workload (default 30,000)")
    parser.add_argument("--concurrency", type=int, default=256, help="HTTP requests in flight at once (default 256)")
    parser.add_argument(
        "--windows", default=",".join(str(window) for window in DEFAULT_WINDOWS),
        help="packing windows to compare, in seconds, comma-separated; 0 sends one message per event (default %(default)s)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="requests per second to send at, as independent clients would; 0 sends as fast as the connections allow (default 0)",
    )
    parser.add_argument("--no-worker", action="store_true", help="skip the worker runs on the collector's messages")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-collector"), help="folder for the results")
    parser.add_argument("--kafka-bootstrap", default="", help="use this broker instead of an embedded tansu")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of a dedicated redis-server")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a worker run may take to drain (default 600)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload (default 7)")
    options = parser.parse_args(argv)

    text = options.windows
    try:
        options.windows = tuple(float(part) for part in text.split(","))
    except ValueError:
        parser.error(f"--windows takes seconds separated by commas, like 0,0.005; got {text!r}")
    for window in options.windows:
        if not 0 <= window <= 1:  # also rejects nan
            parser.error(f"--windows takes windows from 0 to 1 second; got {window} in {text!r}")

    if options.events < MIN_EVENTS:
        parser.error(f"--events must be at least {MIN_EVENTS}, got {options.events}")
    if options.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {options.concurrency}")
    if not (math.isfinite(options.rate) and options.rate >= 0):
        parser.error(f"--rate must be 0 or more requests per second, got {options.rate}")
    if not (math.isfinite(options.timeout) and options.timeout > 0):
        parser.error(f"--timeout must be above 0 seconds, got {options.timeout}")
    return options


async def _send_all(
    base: str, token: str, bodies: list[bytes], concurrency: int, rate_per_s: float = 0.0
) -> tuple[list[float], dict[int, int], float]:
    """Send every body as its own request and return latencies (ms), statuses and wall seconds.

    At most ``concurrency`` requests are in flight. With ``rate_per_s`` above 0,
    request N is sent no earlier than N / rate_per_s seconds after the start, as
    independent clients would send it. It goes later only when every connection
    is busy, which the achieved rate shows.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    next_body = enumerate(bodies)
    started = time.perf_counter()
    last_report = started

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal last_report
        for number, body in next_body:
            if rate_per_s > 0:
                ahead_s = started + number / rate_per_s - time.perf_counter()
                if ahead_s > 0:
                    await asyncio.sleep(ahead_s)
            sent = time.perf_counter()
            async with session.post(f"{base}/v1/events", data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            now = time.perf_counter()
            latencies.append((now - sent) * 1000)
            if now - last_report >= _PROGRESS_EVERY_S:
                last_report = now
                progress(f"  {len(latencies):,} of {len(bodies):,} requests, {len(latencies) / (now - started):,.0f}/s")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


def _metric(text: str, name: str) -> int:
    found = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    if not found:
        raise RunFailed(f"the collector's /metrics has no {name}_total")
    return int(float(found.group(1)))


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def _wait_healthy(child: Child, base: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            if asyncio.run(_get(f"{base}/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        if not child.running or time.monotonic() > deadline:
            child.stop()
            raise RunFailed(f"the collector did not respond to /healthz within {_START_TIMEOUT_S:.0f} s; log:\n{child.log_tail()}")
        time.sleep(0.1)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_window(harness: Harness, workload: Workload, window: float, options: argparse.Namespace) -> dict[str, Any]:
    """Send the workload through a collector with one packing window, then drain it with a worker."""
    settings, figures = _collect(harness, workload, window, options.concurrency, options.rate)
    if not options.no_worker:
        figures["worker"] = _drain(harness, workload, settings, figures, options.timeout)
    return figures


def _collect(
    harness: Harness, workload: Workload, window: float, concurrency: int, rate_per_s: float
) -> tuple[Settings, dict[str, Any]]:
    """Send every event of the workload to a fresh collector as its own request, and measure the requests."""
    token = "bench-" + uuid.uuid4().hex
    port = free_port()
    settings = harness.settings_for(
        f"collector{int(window * 1000)}ms", None,
        collector_pack_within_s=window, collector_tokens=(token,), collector_port=port,
    )
    create_topics(settings)
    start_epoch_s = time.time() - BACKLOG_END_BEFORE_NOW_S - workload.span_s
    bodies = [raw for raw, _ in backlog_events(workload, start_epoch_s)]
    base = f"http://127.0.0.1:{port}"

    child = Child("roitrack", ["--log-level", "info", "collector"], settings, harness.log_path(settings, "collector"))
    try:
        _wait_healthy(child, base)
        load = load_average()
        cpu = harness.cpu_window({"collector": [child.pid]})
        latencies, statuses, wall_s = asyncio.run(_send_all(base, token, bodies, concurrency, rate_per_s))
        cpu_figures = cpu.close()
        status, metrics = asyncio.run(_get(f"{base}/metrics"))
        if status != 200:
            raise RunFailed(f"the collector's /metrics responded with status {status}")
    finally:
        child.stop()
    if statuses != {200: len(bodies)}:
        raise RunFailed(f"the collector responded with statuses {statuses} to {len(bodies)} requests; log:\n{child.log_tail()}")

    messages = _metric(metrics, "roitrack_collector_kafka_messages")
    events = _metric(metrics, "roitrack_collector_kafka_message_events")
    figures: dict[str, Any] = {
        "pack_within_s": window,
        "requests": len(bodies),
        "requests_per_s": round(len(bodies) / wall_s, 1),
        "wall_s": round(wall_s, 3),
        "p50_ms": round(_percentile(latencies, 0.5), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "kafka_messages": messages,
        "events_per_message": round(events / messages, 2) if messages else None,
        "collector_cpu_us_per_event": round(cpu_figures["collector_cpu_s"] / len(bodies) * 1e6, 1),
        "load_average_before": load,
        "cpu": cpu_figures,
    }
    progress(
        f"window {window * 1000:g} ms: {figures['requests_per_s']:,.0f} requests/s, p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, {messages:,} messages ({figures['events_per_message']} events each), "
        f"collector {figures['collector_cpu_us_per_event']:.0f} µs CPU per event"
    )
    return settings, figures


def _drain(
    harness: Harness, workload: Workload, settings: Settings, collected: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Drain the topics the collector wrote with one worker, as ``make bench`` drains a backlog."""
    inputs = Inputs(settings.topic_touchpoints, settings.topic_conversions, collected["requests"],
                    collected["kafka_messages"], workload.purchases, collected["wall_s"])
    window_ms = int(collected["pack_within_s"] * 1000)
    worker = harness.run_worker(f"drain{window_ms}ms", inputs, workload, timeout_s)
    progress(
        f"  worker drained it at {worker['events_per_s']:,.0f} events/s, {worker['events_per_cpu_s']:,.0f} "
        f"events per CPU second; conversions as planned: {worker['matches_expected']}"
    )
    return {key: worker[key] for key in (
        "seconds", "events_per_s", "events_per_cpu_s", "messages_per_s", "conversions_attributed",
        "conversions_unattributed", "matches_expected", "cpu",
    )}


def format_table(windows: list[dict[str, Any]]) -> str:
    lines = [
        "| window | requests/s | p50 ms | p99 ms | Kafka messages | events/message | collector µs CPU/event "
        "| worker events/s | worker events/CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for figures in windows:
        worker = figures.get("worker")
        drained = (
            f"{worker['events_per_s']:,.0f} | {worker['events_per_cpu_s'] or 0:,.0f}" if worker else "not run | not run"
        )
        lines.append(
            f"| {figures['pack_within_s'] * 1000:g} ms | {figures['requests_per_s']:,.0f} | {figures['p50_ms']:.1f} "
            f"| {figures['p99_ms']:.1f} | {figures['kafka_messages']:,} | {figures['events_per_message']} "
            f"| {figures['collector_cpu_us_per_event']:.0f} | {drained} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    exit_on_sigterm()
    options.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": {
        "events": options.events, "concurrency": options.concurrency, "rate_per_s": options.rate,
        "windows": list(options.windows),
        "worker": not options.no_worker, "seed": options.seed,
    }}
    try:
        with ExitStack() as stack:
            harness = open_harness(stack, options.out, options.kafka_bootstrap, options.redis_url)
            results["run_id"] = harness.run_id
            results["machine"] = machine_info(harness.base.redis_url)
            workload = plan_workload(options.events, harness.campaign_ids, harness.base.person_partitions, seed=options.seed)
            results["workload"] = {"events": len(workload.items), "purchases": workload.purchases}
            progress(f"run {harness.run_id}: {len(workload.items):,} events, one per request, "
                     f"{options.concurrency} in flight at most, {f'{options.rate:,g}/s' if options.rate else 'as fast as they go'}, windows {', '.join(f'{w * 1000:g} ms' for w in options.windows)}")
            results["windows"] = [run_window(harness, workload, window, options) for window in options.windows]
    except RunFailed as failure:
        print(f"bench.collector: {failure}", file=sys.stderr)
        return 1
    path = options.out / f"results-{results['run_id']}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (options.out / "results.json").write_bytes(path.read_bytes())
    print(format_table(results["windows"]))
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
