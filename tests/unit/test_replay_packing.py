"""How `roitrack.replay.Replayer` packs events into batch messages."""

from __future__ import annotations

from typing import Any

import orjson

from roitrack.replay import Replayer
from roitrack.settings import Settings


class RecordingProducer:
    """Keeps what would have been produced, in send order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        decoded = orjson.loads(value)
        self.sent.append((topic, decoded if isinstance(decoded, list) else [decoded]))

    def flush(self) -> None:
        pass


def _purchase(user: str, event_time: str) -> dict[str, Any]:
    return {"type": "purchase", "event_id": f"p-{user}", "user_id": user, "event_time": event_time,
            "order_id": f"o-{user}", "revenue": "10", "currency": "EUR"}


def _click(number: int, event_time: str) -> dict[str, Any]:
    return {"type": "click", "event_id": f"c-{number}", "user_id": f"u{number}", "event_time": event_time,
            "campaign_id": "c1", "channel": "instagram"}


def _replay(events: list[dict[str, Any]], batch_size: int) -> list[tuple[str, list[dict[str, Any]]]]:
    settings = Settings(person_partitions=1)
    producer = RecordingProducer()
    Replayer(settings, producer, batch_size=batch_size).replay((orjson.dumps(event), event) for event in events)  # type: ignore[arg-type]  # duck-typed producer
    return producer.sent


def _clicks_before_purchase(sent: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    purchase_at = next(index for index, (topic, _) in enumerate(sent) if topic == "conversions")
    return [event for topic, batch in sent[:purchase_at] if topic == "touchpoints" for event in batch]


def test_slow_buffer_sent_within_span() -> None:
    # One purchase at 12:00, then clicks every minute until 18:00: the conversions
    # buffer never fills, so only the span bound sends it before the evening clicks.
    events = [_purchase("buyer", "2026-11-16T12:00:00Z")]
    events += [_click(minute, f"2026-11-16T{12 + minute // 60:02d}:{minute % 60:02d}:30Z") for minute in range(360)]

    sent = _replay(events, batch_size=50)

    assert all(event["event_time"] <= "2026-11-16T12:01:30Z" for event in _clicks_before_purchase(sent))
    assert sum(len(batch) for _, batch in sent) == len(events)


def test_unbounded_span_sends_purchase_last(monkeypatch: Any) -> None:
    # The case the bound exists for, shown by switching it off.
    monkeypatch.setattr(Replayer, "max_buffer_span_ms", 10**12)
    events = [_purchase("buyer", "2026-11-16T12:00:00Z")]
    events += [_click(minute, f"2026-11-16T{12 + minute // 60:02d}:{minute % 60:02d}:30Z") for minute in range(360)]

    sent = _replay(events, batch_size=50)

    assert any(event["event_time"] > "2026-11-16T17:00:00Z" for event in _clicks_before_purchase(sent))


def test_dense_traffic_fills_messages() -> None:
    events = [_click(number, f"2026-11-16T12:00:{number % 60:02d}Z") for number in range(60)]

    sent = _replay(events, batch_size=20)

    assert [len(batch) for _, batch in sent] == [20, 20, 20]


def test_untimed_events_pack_as_before() -> None:
    events = [_click(number, "not a time") for number in range(10)]

    sent = _replay(events, batch_size=5)

    assert [len(batch) for _, batch in sent] == [5, 5]
