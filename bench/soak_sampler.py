"""The sampling thread of a soak run and its progress lines."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

from bench.soak_probe import Probe, Sample, take_sample
from bench.soak_summary import mib

log = logging.getLogger(__name__)


class Sampler(threading.Thread):
    """Thread that takes a Sample every interval and prints a progress line for each."""

    def __init__(self, probe: Probe, interval_s: float, produced: Callable[[], tuple[int, int]],
                 broker_pid: int | None) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.probe = probe
        self.interval_s = interval_s
        self.produced = produced
        #: The worker being measured; None while it is restarted on purpose.
        self.worker: subprocess.Popen[bytes] | None = None
        self.broker_pid = broker_pid
        self.samples: list[Sample] = []
        self.worker_exited = threading.Event()
        self.origin_s = time.monotonic()
        self._phase = "setup"
        self._phase_changed = threading.Event()
        self._stopping = threading.Event()

    def set_phase(self, phase: str) -> None:
        """Start a phase: take a sample now and then every interval."""
        self._phase = phase
        self._phase_changed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._phase_changed.set()
        self.join(timeout=60)
        self.probe.close()

    def run(self) -> None:
        due_s = time.monotonic()
        while not self._stopping.is_set():
            if self._phase_changed.is_set():
                self._phase_changed.clear()
                due_s = time.monotonic()
            wait_s = due_s - time.monotonic()
            if wait_s > 0 and self._phase_changed.wait(wait_s):
                continue
            if self._stopping.is_set():
                return
            self._sample()
            now_s = time.monotonic()
            while due_s <= now_s:
                due_s += self.interval_s

    def _sample(self) -> None:
        worker = self.worker
        if worker is not None and worker.poll() is not None:
            self.worker_exited.set()
        events, purchases = self.produced()
        try:
            sample = take_sample(
                self.probe, t_s=time.monotonic() - self.origin_s, phase=self._phase, produced_events=events,
                produced_purchases=purchases, worker_pid=None if worker is None else worker.pid,
                broker_pid=self.broker_pid,
            )
        except Exception as exc:  # a failed sample must not end the run; it is logged and skipped
            log.warning("sample at %.0f s failed and is skipped: %r", time.monotonic() - self.origin_s, exc)
            return
        self.samples.append(sample)
        print(progress_line(sample, self.samples), flush=True)


def progress_line(sample: Sample, samples: list[Sample]) -> str:
    """Format one sample as a line of the terminal output, with the rates since the previous sample."""
    rate = ""
    cpu = ""
    if len(samples) > 1:
        previous = samples[-2]
        elapsed_s = sample.t_s - previous.t_s
        if elapsed_s > 0:
            produced = (sample.produced_events - previous.produced_events) / elapsed_s
            applied = (sample.processed_events - previous.processed_events) / elapsed_s
            rate = f" ({produced:,.0f}/s in, {applied:,.0f}/s applied)"
            if sample.worker_cpu_s is not None and previous.worker_cpu_s is not None:
                cpu = f", CPU {(sample.worker_cpu_s - previous.worker_cpu_s) / elapsed_s:.0%}"
    lag = "-" if sample.input_lag_messages is None else f"{sample.input_lag_messages:,}"
    return (
        f"[{sample.t_s:6.0f} s {sample.phase:8}] produced {sample.produced_events:,}{rate}"
        f" backlog {sample.backlog_events:,} ev, lag {lag} msg"
        f" | conversions {sample.conversions_attributed + sample.conversions_unattributed:,}"
        f"/{sample.produced_purchases:,}, pending {sample.pending_conversions:,}"
        f" | worker RSS {mib(sample.worker_rss_bytes)}{cpu}"
        f" | Redis keys {sample.namespace_keys:,}, {mib(sample.namespace_bytes)}"
        f" (used_memory {mib(sample.redis_used_memory_bytes)})"
        f" | load {sample.load_1m:.1f}, sample {sample.sample_s:.2f} s"
    )
