"""`roitrack broker`: a local tansu broker that a producer and a consumer can use, stopped by a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 60


def start_broker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roitrack", "broker", *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_bootstrap(process: subprocess.Popen[str]) -> str:
    """Return the address from the broker's first output line."""
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1)
    process.kill()
    raise AssertionError(f"no address printed; stderr: {process.communicate()[1]}")


def test_broker_serves_until_signal() -> None:
    process = start_broker("--port", "0")
    try:
        bootstrap = read_bootstrap(process)
        topic = f"broker-cli-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(topic, b"hello").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20_000)
        values = [message.value for message in consumer]
        consumer.close()
        assert values == [b"hello"]
    finally:
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=30)

    assert process.returncode == 0, errors
    assert "stopped the broker" in output
    host, port = bootstrap.split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "the broker still listens after the command ended"


def test_busy_port_fails_with_hint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_broker("--port", str(port))
        _, errors = process.communicate(timeout=STARTUP_S)

    assert process.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in errors
    assert "--port 0" in errors


def child_pids(pid: int) -> list[int]:
    """Return the direct children of a process, from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        children.extend(int(child) for child in text.split())
    return children


def test_sigterm_while_starting_leaves_nothing() -> None:
    """SIGTERM as soon as tansu is spawned: the command exits and takes tansu with it."""
    process = start_broker("--port", "0")
    deadline = time.monotonic() + STARTUP_S
    children: list[int] = []
    while not children and time.monotonic() < deadline and process.poll() is None:
        children = child_pids(process.pid)
        time.sleep(0.005)
    assert children, "tansu was not spawned"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)

    # 143 when the signal came during the start, 0 when the broker was up already.
    assert process.returncode in (0, 143)
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text(), (
            f"tansu pid {child} outlived the command")


def test_port_out_of_range_is_usage_error() -> None:
    process = start_broker("--port", "70000")
    _, errors = process.communicate(timeout=STARTUP_S)

    assert process.returncode == 2
    assert "must be 0 (any free port) or a TCP port up to 65535, got 70000" in errors
