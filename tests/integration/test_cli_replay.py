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


def test_replay_counts_definitions_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kafka_bootstrap: str,
) -> None:
    """The summary line names the campaign definitions apart from the file's events."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "click", "event_id": "e1", "event_time": "2026-11-02T09:00:00Z", "user_id": "u1", '
        '"campaign_id": "alpha", "channel": "instagram"}\n'
    )
    campaigns = tmp_path / "campaigns.toml"
    campaigns.write_text(
        'currency = "EUR"\n\n[[campaigns]]\ncampaign_id = "alpha"\nname = "Alpha"\nchannel = "instagram"\n'
        'margin = "0.40"\nstart = 2026-11-02T00:00:00Z\nend = 2026-11-16T00:00:00Z\nspend = "100.00"\n'
    )
    monkeypatch.setenv("ROITRACK_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ROITRACK_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")

    assert main(["replay", str(events), "--campaigns", str(campaigns)]) == 0

    line = capsys.readouterr().out.strip().splitlines()[-1]
    # The campaign and its spend are two definitions.
    assert line.startswith("replayed 2 campaign definition(s) from campaigns.toml, then 1 events from events.jsonl in 3 messages"), line


def test_replay_says_where_unroutable_lines_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kafka_bootstrap: str,
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "teleport", "event_id": "t1"}\nnot json\n')
    monkeypatch.setenv("ROITRACK_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("ROITRACK_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")

    assert main(["replay", str(events)]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert "(0 conversions, 2 unroutable)" in lines[-2]
    assert lines[-1].startswith("2 unroutable line(s) (not JSON, not an object, or an unknown type) went to touchpoints")
    assert "roitrack deadletters list" in lines[-1]
