"""Processes the harness starts: a dedicated redis-server and the measured child processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from kafka import KafkaAdminClient

from roitrack.connections import kafka_python_config
from roitrack.demo import settings_environment
from roitrack.embedded import LOOPBACK_HOST, free_port, redis_server_binary
from roitrack.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
_STOP_TIMEOUT_S = 30.0


class DedicatedRedis:
    """A redis-server on a free loopback port, without persistence, used by nothing but the benchmark.

    Nothing else writes to it, so the growth of INFO ``used_memory`` during a
    run is the run's own.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._dir = Path(tempfile.mkdtemp(prefix="roitrack-bench-redis-"))

    def start(self) -> str:
        binary = redis_server_binary()
        port = free_port()
        log_handle = (self._dir / "redis.log").open("wb")
        self.process = subprocess.Popen(
            [str(binary), "--port", str(port), "--bind", LOOPBACK_HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self._dir), "--daemonize", "no"],
            stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log_handle.close()
        self.url = f"redis://{LOOPBACK_HOST}:{port}/0"
        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        deadline = time.monotonic() + 15.0
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{binary} did not start on port {port}; see {self._dir / 'redis.log'}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()
        return self.url

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self._dir, ignore_errors=True)


class Child:
    """A measured child process (``python -m MODULE ARGS``) with its output in a log file."""

    def __init__(self, module: str, args: list[str], settings: Settings, log_path: Path) -> None:
        self.module = module
        self.log_path = log_path
        env = {**os.environ, **settings_environment(settings), "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop with SIGTERM, and kill the process when it has not exited within 30 s."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.module, self.pid, _STOP_TIMEOUT_S)
            self.process.kill()
            self.process.wait()


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so a harness stops the broker, Redis and children it started, as on Ctrl-C."""

    def handle(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handle)


def delete_topics(settings: Settings, marker: str) -> int:
    """Delete every topic whose name contains ``marker`` and return how many were deleted."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.require_kafka().split(","), client_id="roitrack-bench",
        **kafka_python_config(settings),
    )
    try:
        names = [name for name in admin.list_topics() if marker in name]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()
    return len(names)


def delete_namespace(url: str, namespace: str) -> int:
    """Delete every key of a Redis namespace and return how many were deleted."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted
