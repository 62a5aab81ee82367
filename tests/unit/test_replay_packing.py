"""How `roitrack.replay.Replayer` packs events into batch messages."""

from __future__ import annotations

from typing import Any

import orjson

from roitrack.replay import Replayer, read_events
from roitrack.settings import Settings


class RecordingProducer:
    """Producer stand-in that records each message it would send, in send order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[dict[str, Any]]]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        decoded = orjson.loads(value)
        self.sent.append((topic, decoded if isinstance(decoded, list) else [decoded]))

    def flush(self) -> None:
        pass


def _purchase(user: str, event_time: str, deal_id: str | None = None) -> dict[str, Any]:
    event = {"type": "purchase", "event_id": f"p-{user}", "user_id": user, "event_time": event_time,
             "order_id": f"o-{user}", "revenue": "10", "currency": "EUR"}
    if deal_id is not None:
        event["deal_id"] = deal_id
    return event


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


def _afternoon_clicks() -> list[dict[str, Any]]:
    """Return one click a minute from 12:00 to 18:00."""
    return [_click(minute, f"2026-11-16T{12 + minute // 60:02d}:{minute % 60:02d}:30Z") for minute in range(360)]


def test_deal_purchase_sent_at_once() -> None:
    # The conversions buffer never fills, so without the rule the purchase would
    # wait for the final flush, behind clicks hours later.
    events = [_purchase("buyer", "2026-11-16T12:00:00Z", deal_id="sofa-group"), *_afternoon_clicks()]

    sent = _replay(events, batch_size=50)

    assert sent[0] == ("conversions", [events[0]])
    assert sum(len(batch) for _, batch in sent) == len(events)


def test_deal_purchase_follows_buffered_touchpoints() -> None:
    clicks = _afternoon_clicks()[:3]
    purchase = _purchase("buyer", "2026-11-16T12:05:00Z", deal_id="sofa-group")

    sent = _replay([*clicks, purchase], batch_size=50)

    assert sent == [("touchpoints", clicks), ("conversions", [purchase])]


def test_large_deal_purchase_follows_touchpoints() -> None:
    clicks = _afternoon_clicks()[:3]
    purchase = _purchase("buyer", "2026-11-16T12:05:00Z", deal_id="sofa-group")
    purchase["user_agent"] = "x" * (Replayer.max_packed_bytes + 1)

    sent = _replay([*clicks, purchase], batch_size=50)

    assert sent == [("touchpoints", clicks), ("conversions", [purchase])]


def test_plain_purchase_waits_for_its_buffer(monkeypatch: Any) -> None:
    # No flush by age, however slowly this machine replays.
    monkeypatch.setattr(Replayer, "max_buffer_age_s", 3600.0)
    events = [_purchase("buyer", "2026-11-16T12:00:00Z"), *_afternoon_clicks()]

    sent = _replay(events, batch_size=50)

    assert any(event["event_time"] > "2026-11-16T17:00:00Z" for event in _clicks_before_purchase(sent))


def test_dense_traffic_fills_messages() -> None:
    events = [_click(number, f"2026-11-16T12:00:{number % 60:02d}Z") for number in range(60)]

    sent = _replay(events, batch_size=20)

    assert [len(batch) for _, batch in sent] == [20, 20, 20]


def test_large_event_follows_buffered_events() -> None:
    clicks = _afternoon_clicks()[:3]
    large = _click(999, "2026-11-16T12:10:00Z")
    large["user_agent"] = "x" * (Replayer.max_packed_bytes + 1)

    sent = _replay([*clicks, large], batch_size=50)

    assert sent == [("touchpoints", clicks), ("touchpoints", [large])]


def test_packed_message_stays_under_kafka_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(Replayer, "max_message_bytes", 1_000)
    events = [_click(number, "2026-11-16T12:00:00Z") for number in range(40)]

    sent = _replay(events, batch_size=50)

    sizes = [len(orjson.dumps(batch)) for _, batch in sent]
    assert max(sizes) <= 1_000
    assert sum(len(batch) for _, batch in sent) == len(events)
    assert len(sent) > 1


def test_byte_order_mark_is_skipped(tmp_path: Any) -> None:
    path = tmp_path / "events.jsonl"
    click = _click(1, "2026-11-16T12:00:00Z")
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(click) + b"\n")

    assert [event for _, event in read_events(path)] == [click]
