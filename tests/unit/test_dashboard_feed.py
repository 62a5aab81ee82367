"""The dashboard feed's state and fan-out, without Kafka or Redis."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS, Alert
from streams.dashboard.alerts import MAX_MESSAGE_CHARS, clean_alert
from streams.dashboard.feed import MAX_QUEUED_MESSAGES, DashboardFeed, sse_event


async def no_snapshot() -> list[dict[str, Any]]:
    return []


def feed() -> DashboardFeed:
    return DashboardFeed(Settings(kafka_bootstrap="127.0.0.1:9092"), no_snapshot)


def update(campaign: str = "c1", sequence: int = 1, roi: str | None = "0.5", window: str = "lifetime") -> dict[str, Any]:
    figures = {"conversions": "1", "revenue": "150", "roi": roi, "roas": "1.5", "cpa": "100"}
    return {
        "type": "roi_update", "campaign_id": campaign, "campaign_name": "Campaign", "window": window,
        "window_s": None if window == "lifetime" else 3600, "window_end": None, "sequence": sequence,
        "currency": "EUR", "margin": "1", "spend": "100", "default_model": "last_touch",
        "roi": roi, "roas": "1.5", "cpa": "100",
        "models": {model: figures for model in ATTRIBUTION_MODELS},
        "emitted_at": "2026-11-02T10:00:00Z",
    }


def events(chunk: bytes | None) -> list[tuple[str, Any]]:
    assert chunk is not None
    parsed = []
    for block in chunk.decode().strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        parsed.append((name_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))))
    return parsed


def test_sse_event_is_one_data_line() -> None:
    chunk = sse_event("alert", {"message": "line one\nline two"})

    assert chunk == b'event: alert\ndata: {"message":"line one\\nline two"}\n\n'


def test_apply_roi_keeps_highest_sequence() -> None:
    state = feed()

    assert state.apply_roi(update(sequence=2, roi="0.5"))
    assert not state.apply_roi(update(sequence=1, roi="0.1"))
    assert not state.apply_roi(update(sequence=2, roi="0.2"))
    assert state.apply_roi(update(sequence=3, roi="0.7"))

    assert state.latest[("c1", "lifetime")]["roi"] == "0.7"
    assert [point[1] for point in state.points[("c1", "lifetime")]] == [2, 3]


def test_apply_roi_rejects_invalid() -> None:
    state = feed()
    broken = update()
    del broken["models"]

    assert not state.apply_roi(broken)
    assert not state.apply_roi(["not", "an", "object"])
    assert state.rejected == 2
    assert state.latest == {}


def test_subscribe_gets_state_then_changes() -> None:
    async def scenario() -> None:
        state = feed()
        state.apply_roi(update(campaign="c1"))
        state.apply_alert({"rule_id": "r1", "state": "fired"}, received_ms=5)
        subscriber = state.subscribe()
        assert subscriber is not None

        first = events(subscriber.queue.get_nowait())
        assert [name for name, _ in first] == ["hello", "history", "roi", "alerts"]
        assert first[0][1]["windows"] == ["1h", "24h", "7d", "lifetime"]
        assert first[1][1]["series"][0]["points"][0][1] == 1
        assert first[3][1][0]["rule_id"] == "r1"

        state.apply_roi(update(campaign="c2"))
        assert [name for name, _ in events(subscriber.queue.get_nowait())] == ["roi"]

        await state.stop()
        assert subscriber.queue.get_nowait() is None

    asyncio.run(scenario())


def test_slow_subscriber_is_disconnected() -> None:
    async def scenario() -> None:
        state = feed()
        subscriber = state.subscribe()
        assert subscriber is not None
        for sequence in range(1, MAX_QUEUED_MESSAGES + 2):
            state.apply_roi(update(sequence=sequence))

        assert subscriber not in state.subscribers
        assert subscriber.queue.get_nowait() is None

    asyncio.run(scenario())


def test_clean_alert_keeps_known_fields() -> None:
    alert = clean_alert(
        {
            "rule_id": "roi-low", "campaign_id": "c1", "window": "1h", "model": "linear", "state": "resolved",
            "metric": "roi", "observed": "0.25", "threshold": "0.3", "message_en": "x" * (MAX_MESSAGE_CHARS + 10),
            "message_nl": "Campagne c1: ROI 0,25", "extra": {"a": 1},
        },
        received_ms=42,
    )

    assert alert == {
        "rule_id": "roi-low", "campaign_id": "c1", "window": "1h", "model": "linear", "state": "resolved",
        "metric": "roi", "observed": "0.25", "threshold": "0.3", "message_en": "x" * MAX_MESSAGE_CHARS,
        "message_nl": "Campagne c1: ROI 0,25", "received_ms": 42,
    }


def test_clean_alert_shows_what_the_alerts_consumer_sends() -> None:
    """The fields come from the Alert record that `roitrack alerts` produces."""
    now = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    record = Alert(
        alert_id="a" * 32, breach_id="b" * 32, rule_id="roi-low", rule_kind="roi_below", state="fired",
        campaign_id="c1", campaign_name=None, window="24h", model="last_touch", metric="roi",
        observed=Decimal("-0.6"), threshold=Decimal(0), baseline=None, spend=Decimal(100), currency="EUR",
        update_sequence=3, breach_started_at=now, observed_at=now, emitted_at=now,
        message_en="Campaign c1: ROI -0.60 is below 0.00 (24h, last touch).",
        message_nl="Campagne c1: ROI -0,60 ligt onder 0,00 (laatste 24 u, laatste contactmoment).",
    ).model_dump(mode="json")

    alert = clean_alert(record, received_ms=1)

    assert alert is not None
    assert (alert["observed"], alert["threshold"]) == ("-0.6", "0")
    assert (alert["message_en"], alert["message_nl"]) == (record["message_en"], record["message_nl"])


@pytest.mark.parametrize("number", ["1e999999999999999999", "1e-50", "9" * 65, float("inf")])
def test_clean_alert_drops_numbers_too_large_to_show(number: object) -> None:
    alert = clean_alert({"state": "fired", "observed": number, "threshold": "1e41"}, received_ms=1)

    assert alert is not None
    assert (alert["observed"], alert["threshold"]) == (None, None)


def test_clean_alert_tolerates_odd_values() -> None:
    alert = clean_alert(
        {"state": ["fired"], "observed": "NaN", "threshold": True, "rule_id": {"nested": 1}, "campaign_id": 7},
        received_ms=1,
    )

    assert alert is not None
    assert alert["state"] == "unknown"
    assert alert["observed"] is None
    assert alert["threshold"] is None
    assert alert["rule_id"] is None
    assert alert["campaign_id"] == "7"
    assert alert["message_en"] is None
    assert clean_alert("fired", received_ms=1) is None
    assert clean_alert({"state": {"fired": 1}}, received_ms=1)["state"] == "unknown"  # type: ignore[index]


def test_static_files_are_package_data() -> None:
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["streams"]
    static = sorted((root / "streams" / "dashboard" / "static").iterdir())

    assert static
    for path in static:
        relative = path.relative_to(root / "streams").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_apply_roi_skips_unreadable_figures(caplog: pytest.LogCaptureFixture) -> None:
    state = feed()

    with caplog.at_level(logging.WARNING, logger="streams.dashboard.feed"):
        assert not state.apply_roi(update(sequence=1, roi="abc"))
        assert not state.apply_roi(update(sequence=2, roi="1e999999"))
        assert not state.apply_roi(update(sequence=3, roi="1e-999999"))
    assert state.apply_roi(update(sequence=4, roi="0.7"))

    assert state.rejected == 3
    assert "skipped an ROI update" in caplog.text
    assert "roi: Value error, must be a decimal string such as \"-0.25\", got 'abc'" in caplog.text
    assert state.latest[("c1", "lifetime")]["roi"] == "0.7"


def test_feed_skips_a_record_it_cannot_handle(caplog: pytest.LogCaptureFixture) -> None:
    """An error in one record is counted and skipped; restarting the reader would meet the same record again."""
    state = feed()
    handled: list[int] = []

    def handle(record: Any) -> None:
        if record.offset == 1:
            raise MemoryError("a value too large to format")
        handled.append(record.offset)

    class Record:
        def __init__(self, offset: int) -> None:
            self.partition, self.offset = 0, offset

    with caplog.at_level(logging.WARNING):
        for offset in range(3):
            state._handle("alerts", handle, Record(offset))  # type: ignore[arg-type]

    assert handled == [0, 2]
    assert state.rejected == 1
    assert "a message of alerts at partition 0 offset 1" in caplog.text
