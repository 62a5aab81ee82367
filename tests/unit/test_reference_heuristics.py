"""The reference heuristic models against ChannelAttribution's recorded output."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

from tests.reference_heuristics import (
    COLUMNS,
    PathRow,
    heuristic_models,
    read_channelattribution_output,
    read_path_rows,
)

JOURNEYS_PATH = REPO_ROOT / "roitrack" / "data" / "journeys.csv.gz"
RECORDED_PATH = REPO_ROOT / "tests" / "data" / "channelattribution_heuristic.csv"
TOLERANCE = Decimal("1e-6")
CHANNELS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mi")


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Decimal]]:
    return heuristic_models(read_path_rows(JOURNEYS_PATH))


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, Decimal]]:
    return read_channelattribution_output(RECORDED_PATH)


def test_channels_match_recorded_output(
    reference: dict[str, dict[str, Decimal]], recorded: dict[str, dict[str, Decimal]]
) -> None:
    assert sorted(recorded) == sorted(CHANNELS)
    assert sorted(reference) == sorted(CHANNELS)


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("column", COLUMNS)
def test_reference_matches_channelattribution(
    reference: dict[str, dict[str, Decimal]],
    recorded: dict[str, dict[str, Decimal]],
    channel: str,
    column: str,
) -> None:
    expected = recorded[channel][column]
    actual = reference[channel][column]
    assert abs(actual - expected) <= TOLERANCE, f"{channel} {column}: reference {actual}, ChannelAttribution {expected}"


@pytest.mark.parametrize("model", ["first_touch", "last_touch", "linear_touch"])
def test_each_model_credits_all_conversions(reference: dict[str, dict[str, Decimal]], model: str) -> None:
    conversions = sum((credits[f"{model}_conversions"] for credits in reference.values()), Decimal(0))
    value = sum((credits[f"{model}_value"] for credits in reference.values()), Decimal(0))
    rows = read_path_rows(JOURNEYS_PATH)

    assert abs(conversions - 19785) <= TOLERANCE
    assert abs(value - sum((row.value for row in rows), Decimal(0))) <= TOLERANCE


def test_linear_counts_repeated_channels() -> None:
    rows = [PathRow(channels=("a", "b", "a", "c"), conversions=Decimal(2), value=Decimal("10"))]

    result = heuristic_models(rows)

    assert result["a"]["linear_touch_conversions"] == Decimal(1)
    assert result["a"]["linear_touch_value"] == Decimal(5)
    assert result["b"]["linear_touch_value"] == Decimal("2.5")
    assert result["c"]["linear_touch_value"] == Decimal("2.5")


def test_first_and_last_touch_of_path() -> None:
    rows = [
        PathRow(channels=("a", "b", "c"), conversions=Decimal(3), value=Decimal("9.5")),
        PathRow(channels=("c",), conversions=Decimal(1), value=Decimal("0.5")),
    ]

    result = heuristic_models(rows)

    assert result["a"]["first_touch_conversions"] == Decimal(3)
    assert result["a"]["first_touch_value"] == Decimal("9.5")
    assert result["a"]["last_touch_value"] == Decimal(0)
    assert result["b"]["first_touch_value"] == Decimal(0)
    assert result["b"]["last_touch_value"] == Decimal(0)
    assert result["c"]["first_touch_conversions"] == Decimal(1)
    assert result["c"]["last_touch_conversions"] == Decimal(4)
    assert result["c"]["last_touch_value"] == Decimal("10.0")


def test_path_without_conversions_lists_channels() -> None:
    rows = [PathRow(channels=("x", "y"), conversions=Decimal(0), value=Decimal(0))]

    result = heuristic_models(rows)

    assert sorted(result) == ["x", "y"]
    assert all(amount == 0 for credits in result.values() for amount in credits.values())
