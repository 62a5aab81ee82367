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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deadletters", "redrive", "--limit", "1"], "unrecognized arguments: --limit 1"),
        (["deadletters", "redrive", "--json"], "unrecognized arguments: --json"),
        (["deadletters", "list", "--dry-run"], "unrecognized arguments: --dry-run"),
        (["deadletters", "list", "--to-topic", "conversions"], "unrecognized arguments: --to-topic conversions"),
        (["deadletters", "list", "--from-beginning"], "unrecognized arguments: --from-beginning"),
        (["deadletters", "list", "--group", "mine"], "unrecognized arguments: --group mine"),
        (["deadletters", "list", "--reason", "Late"], "argument --reason: invalid choice: 'Late'"),
        (["deadletters", "redrive", "--reason", "Late"], "argument --reason: invalid choice: 'Late'"),
        (["deadletters", "redrive", "--reason", "(unreadable)"], "argument --reason: invalid choice: '(unreadable)'"),
        (["deadletters", "list", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
        (["deadletters", "list", "--limit", "-3"], "argument --limit: must be at least 1, got -3"),
        (["deadletters", "list", "--limit", "many"], "argument --limit: not a whole number: 'many'"),
        (["deadletters", "redrive", "--to-topic", ""], "argument --to-topic: needs a topic name, got an empty value"),
        (["deadletters", "redrive", "--source-topic", " "], "argument --source-topic: needs a topic name"),
        (["deadletters", "list", "--source-topic", ""], "argument --source-topic: needs a topic name"),
        (["deadletters", "redrive", "--group", ""], "argument --group: needs a consumer group name"),
    ],
)
def test_deadletters_rejects_invalid_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_deadletters_reason_error_lists_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["deadletters", "redrive", "--reason", "Late"])

    error = capsys.readouterr().err
    for reason in ("undecodable", "invalid", "unknown_type", "unsupported", "late"):
        assert f"'{reason}'" in error


def test_deadletters_list_accepts_unreadable_reason() -> None:
    from roitrack.cli import build_parser

    args = build_parser().parse_args(["deadletters", "list", "--reason", "(unreadable)", "--limit", "5"])

    assert args.reason == "(unreadable)"
    assert args.limit == 5
