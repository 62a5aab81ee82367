"""The latency benchmark's reading of the credits topic."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import orjson

from bench.outputs import credit_positions
from streams.progress import SourceProgress, progress_message


def record(partition: int, offset: int, value: object) -> SimpleNamespace:
    return SimpleNamespace(partition=partition, offset=offset, value=orjson.dumps(value))


def credit(conversion_id: str, campaign_id: str, weight: str) -> dict[str, object]:
    return {"conversion_id": conversion_id, "campaign_id": campaign_id, "weights": {"last_touch": weight}}


def test_positions_skip_facts_and_progress_reports() -> None:
    records = [
        record(0, 0, credit("c1", "spring", "1")),
        record(0, 1, progress_message(3, SourceProgress(1_700_000_000_000, False))),
        record(0, 2, [{"type": "engagement", "fact_id": "f1"}]),
        record(0, 3, credit("c2", "spring", "1")),
        record(1, 0, credit("c3", "autumn", "0")),
    ]

    positions = credit_positions(records)

    assert positions == {"c1": ("spring", Decimal(1)), "c2": ("spring", Decimal(2))}


def test_positions_read_credit_arrays_in_order() -> None:
    packed = [dict(credit("c2", "spring", "1"), type="credit"), dict(credit("c3", "spring", "0.5"), type="credit")]
    records = [
        record(0, 0, credit("c1", "spring", "1")),
        record(0, 1, packed),
    ]

    positions = credit_positions(records)

    assert positions == {"c1": ("spring", Decimal(1)), "c2": ("spring", Decimal(2)), "c3": ("spring", Decimal("2.5"))}
