"""bench.collector rejects bad options before it starts any service, naming the value."""

from __future__ import annotations

import pytest

from bench.collector import parse_options


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--events", "3"], "--events must be at least 10, got 3"),
        (["--concurrency", "0"], "--concurrency must be at least 1, got 0"),
        (["--windows", "nan"], "got nan in 'nan'"),
        (["--windows", "1.5"], "got 1.5 in '1.5'"),
        (["--windows", "-0.01"], "got -0.01 in '-0.01'"),
        (["--windows", "0,,0.005"], "got '0,,0.005'"),
        (["--windows", ""], "got ''"),
        (["--windows", "5ms"], "got '5ms'"),
        (["--rate", "nan"], "--rate must be 0 or more requests per second, got nan"),
        (["--rate", "-5"], "got -5.0"),
        (["--timeout", "0"], "--timeout must be above 0 seconds, got 0.0"),
    ],
)
def test_bad_option_rejected(arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_options(arguments)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_good_options_parsed() -> None:
    options = parse_options(["--windows", "0,0.005", "--rate", "1000", "--events", "10"])

    assert options.windows == (0.0, 0.005)
    assert options.rate == 1000.0
    assert options.events == 10
