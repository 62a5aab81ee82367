"""Reference implementation of ChannelAttribution's heuristic models, for tests.

It follows ``heuristic_models(df, var_path, var_conv, var_value=...)`` of the
ChannelAttribution package (version 2.2.5) on the raw journey rows:

* first touch: a path's conversions and value go to its first channel;
* last touch: they go to its last channel;
* linear: every step of an ``n``-step path gets ``1/n`` of them, and a channel that
  appears twice on a path is credited twice.

It uses only the standard library and exact decimals, and imports nothing from
roitrack, so it can check roitrack's own attribution code independently.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from pathlib import Path

#: Output columns, named and ordered as ChannelAttribution names them.
COLUMNS = (
    "first_touch_conversions",
    "first_touch_value",
    "last_touch_conversions",
    "last_touch_value",
    "linear_touch_conversions",
    "linear_touch_value",
)
_PRECISION = 50


@dataclass(frozen=True)
class PathRow:
    """One CSV row: the channels of a path, its conversions and its conversion value."""

    channels: tuple[str, ...]
    conversions: Decimal
    value: Decimal


def read_path_rows(path: Path) -> list[PathRow]:
    """Read ``path,total_conversions,total_conversion_value,...`` rows from a CSV or CSV.gz file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        rows = []
        for record in csv.DictReader(handle):
            channels = tuple(part.strip() for part in record["path"].split(">"))
            rows.append(
                PathRow(
                    channels=channels,
                    conversions=Decimal(record["total_conversions"]),
                    value=Decimal(record["total_conversion_value"]),
                )
            )
    return rows


def heuristic_models(rows: Iterable[PathRow]) -> dict[str, dict[str, Decimal]]:
    """Compute first-touch, last-touch and linear credit per channel.

    Returns ``{channel: {column: amount}}`` with every column of ``COLUMNS`` for every
    channel that appears on any path, including paths without conversions.
    """
    results: dict[str, dict[str, Decimal]] = {}

    def credit(channel: str, column: str, amount: Decimal) -> None:
        if channel not in results:
            results[channel] = {name: Decimal(0) for name in COLUMNS}
        results[channel][column] += amount

    with localcontext() as context:
        context.prec = _PRECISION
        for row in rows:
            first = row.channels[0]
            last = row.channels[-1]
            credit(first, "first_touch_conversions", row.conversions)
            credit(first, "first_touch_value", row.value)
            credit(last, "last_touch_conversions", row.conversions)
            credit(last, "last_touch_value", row.value)

            steps = len(row.channels)
            for channel in row.channels:
                credit(channel, "linear_touch_conversions", row.conversions / steps)
                credit(channel, "linear_touch_value", row.value / steps)
    return results


def read_channelattribution_output(path: Path) -> dict[str, dict[str, Decimal]]:
    """Read a ``heuristic_models`` result saved as CSV into ``{channel: {column: amount}}``."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = (line for line in handle if not line.startswith("#"))
        return {
            record["channel_name"]: {column: Decimal(record[column]) for column in COLUMNS}
            for record in csv.DictReader(lines)
        }
