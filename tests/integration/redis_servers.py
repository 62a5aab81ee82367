"""Redis servers started for one test module: a 3-node Redis Cluster, and a TLS server.

They use ``redis-server`` and ``redis-cli`` from PATH, as Debian's redis-server
and redis-tools packages install them; cluster bus ports need Redis 7.0 or newer.
Every node listens on 127.0.0.1 only, on ports taken from ``free_port()``, and
keeps its files in a temp dir of the test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from roitrack.embedded import LOOPBACK_HOST, free_port
from tests.tls_files import TlsFiles, missing_openssl

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05


def missing_redis_tools() -> str:
    """Return why the Redis tools are unusable, or '' when redis-server and redis-cli are on PATH."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found on PATH; install Debian's redis-server and "
            "redis-tools packages to run the Redis Cluster and TLS tests"
        )
    return ""


@dataclass
class RedisNode:
    """One redis-server child process and its log."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the node with SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)


def start_node(directory: Path, port: int, extra_args: Sequence[str], ping: redis.Redis) -> RedisNode:
    """Start redis-server in ``directory`` and wait until ``ping`` gets a reply.

    Raises RuntimeError with the end of the server's log when it exits or stays silent.
    """
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    command = [
        "redis-server",
        "--bind", LOOPBACK_HOST,
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", "",
        *extra_args,
    ]
    with log_path.open("wb") as log_handle:
        process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT)
    node = RedisNode(port, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {port} exited with status {process.returncode}:\n{node.log_tail()}"
                )
            try:
                if ping.ping():
                    return node
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"redis-server on port {port} did not reply to PING within {START_TIMEOUT_S:.0f} s:\n"
                    f"{node.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)
    except BaseException:
        node.stop()
        raise
    finally:
        ping.close()


@contextmanager
def redis_cluster(directory: Path, nodes: int = 3) -> Iterator[list[RedisNode]]:
    """Run a Redis Cluster of ``nodes`` primaries without replicas; stop every node on exit.

    Each node gets a client port and a cluster bus port (``--cluster-port``,
    Redis 7.0 or newer) from ``free_port()``.
    """
    with ExitStack() as stack:
        started: list[RedisNode] = []
        for index in range(nodes):
            port, bus_port = free_port(), free_port()
            node_dir = directory / f"node-{index}"
            args = [
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus_port),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]
            node = start_node(node_dir, port, args, redis.Redis(host=LOOPBACK_HOST, port=port))
            stack.callback(node.stop)
            started.append(node)

        addresses = [f"{LOOPBACK_HOST}:{node.port}" for node in started]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create {' '.join(addresses)} failed with status "
                f"{created.returncode}:\n{created.stdout}\n{created.stderr}"
            )
        _wait_cluster_ok(started)
        yield started


def _wait_cluster_ok(nodes: Sequence[RedisNode]) -> None:
    """Wait until every node reports cluster_state:ok and lists every node of the cluster."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for node in nodes:
        client = redis.Redis(host=LOOPBACK_HOST, port=node.port, decode_responses=True)
        try:
            while True:
                info = client.cluster("INFO")
                if info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(nodes):
                    break
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"cluster node on port {node.port} is not ready: {info}")
                time.sleep(_POLL_INTERVAL_S)
        finally:
            client.close()


@contextmanager
def redis_tls_server(directory: Path, tls: TlsFiles) -> Iterator[RedisNode]:
    """Run a standalone redis-server that accepts TLS only, without client certificates."""
    port = free_port()
    args = [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(tls.server_cert),
        "--tls-key-file", str(tls.server_key),
        "--tls-ca-cert-file", str(tls.ca_cert),
        "--tls-auth-clients", "no",
    ]
    ping = redis.Redis(host=LOOPBACK_HOST, port=port, ssl=True, ssl_ca_certs=str(tls.ca_cert))
    node = start_node(directory, port, args, ping)
    try:
        yield node
    finally:
        node.stop()


def redis_supports_tls() -> str:
    """Return why redis-server cannot serve TLS, or '' when it can."""
    if missing_openssl():
        return missing_openssl()
    result = subprocess.run(
        ["redis-server", "--port", "0", "--tls-port", "0", "--save", ""],
        capture_output=True, text=True, timeout=30, check=False,
    )
    # A build without TLS rejects the tls-port directive; a build with TLS exits
    # because nothing is configured to listen.
    if "tls-port" in result.stdout + result.stderr and "Bad directive" in result.stdout + result.stderr:
        return "this redis-server was built without TLS (it rejects --tls-port)"
    return ""
