"""`roitrack replay` without a reachable broker: a clear message instead of a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from roitrack.cli import main


def test_replay_without_broker_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A loopback port that nothing listens on: bound, then released. kafka-python
    # gives up bootstrapping after 30 s.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "click"}\n')
    monkeypatch.setenv("ROITRACK_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    monkeypatch.setenv("ROITRACK_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")

    with pytest.raises(SystemExit) as raised:
        main(["replay", str(events)])

    assert f"no Kafka broker reachable at 127.0.0.1:{port}" in str(raised.value)
    assert "ROITRACK_KAFKA_BOOTSTRAP" in str(raised.value)
