"""`roitrack collector` as a child process, for tests that send it real HTTP requests."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from roitrack.demo import settings_environment
from roitrack.embedded import free_port
from roitrack.settings import Settings
from tests.harness import REPO_ROOT


class CollectorProcess:
    """`roitrack collector` as a child process on a free loopback port, logging to a file."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "collector.log"
        env = {**os.environ, **settings_environment(settings), "ROITRACK_COLLECTOR_PORT": str(self.port),
               "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roitrack", "--log-level", "info", "collector"],
                env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", "/healthz", b"", {})[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the collector did not start; log:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def post_events(self, body: bytes, token: str | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, raw = self.request("POST", "/v1/events", body, headers)
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
