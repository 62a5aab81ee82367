"""Command-line options that are rejected before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from roitrack.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
        (["demo", "--synthetic", "--timeout", "-1"], "--timeout must be a positive number of seconds, got -1.0"),
        (["demo", "--rate", "-5"], "--rate must be 0 (no limit) or a positive number of events per second, got -5.0"),
        (["demo", "--seed", "7"], "--seed applies only with --synthetic; add --synthetic, or leave it out"),
        (["demo", "--people", "100", "--ground-truth", "truth.json"],
         "--people and --ground-truth apply only with --synthetic; add --synthetic, or leave them out"),
        (["demo", "--synthetic", "--journeys", "day.csv"],
         "--journeys applies only to the journey dataset, not with --synthetic; leave it out, or drop --synthetic"),
        (["demo", "--synthetic", "--people", "39"], "--people must be at least 40, got 39"),
        (["demo", "--synthetic", "--ground-truth", ""], "--ground-truth needs a file path, got an empty value"),
    ],
)
def test_demo_rejects_invalid_option(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert str(raised.value) == message


def test_replay_rejects_missing_campaigns_file(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    missing = tmp_path / "campaigns.toml"

    with pytest.raises(SystemExit) as raised:
        main(["replay", str(events), "--campaigns", str(missing)])

    assert str(raised.value) == f"--campaigns file not found or not a file: {missing}"


def test_report_rejects_a_folder_as_out(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["report", "--out", str(tmp_path)])

    assert str(raised.value) == f"--out {tmp_path} is a folder; name the HTML file to write, such as {tmp_path / 'report.html'}"


def test_report_names_an_unreachable_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1 of the loopback address.
    monkeypatch.setenv("ROITRACK_REDIS_URL", "redis://127.0.0.1:1/0")

    with pytest.raises(SystemExit) as raised:
        main(["report", "--out", str(tmp_path / "report.html")])

    message = str(raised.value)
    assert message.startswith("cannot read Redis at redis://127.0.0.1:1/0: ")
    assert message.endswith("Check that Redis runs and that ROITRACK_REDIS_URL points at it")
    assert not (tmp_path / "report.html").exists()
