"""Routing of deal, impressions and follower-snapshot events by the collector and the replay."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from roitrack.collector.ingest import dedup_key_of, event_id_of, route_event
from roitrack.replay import route
from roitrack.settings import Settings
from schemas.decode import validate_event

SETTINGS = Settings()
EVENTS: dict[str, dict[str, Any]] = {
    "deal": {"type": "deal", "deal_id": "d-1", "campaign_id": "spring", "price": "10", "currency": "EUR",
             "threshold": 3, "deadline": "2026-11-03T00:00:00Z"},
    "impressions": {"type": "impressions", "impressions_id": "i-1", "campaign_id": "spring", "channel": "x",
                    "count": 10, "period_start": "2026-11-02T00:00:00Z", "period_end": "2026-11-02T01:00:00Z"},
    "follower_snapshot": {"type": "follower_snapshot", "snapshot_id": "f-1", "campaign_id": "spring", "channel": "x",
                          "followers": 5, "observed_at": "2026-11-02T00:00:00Z"},
}
TOPICS = {"deal": SETTINGS.topic_campaigns, "impressions": SETTINGS.topic_spend, "follower_snapshot": SETTINGS.topic_spend}


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_collector_routes_by_campaign(event_type: str) -> None:
    event = validate_event(EVENTS[event_type], None, b"")

    assert route_event(SETTINGS, event) == (TOPICS[event_type], "spring")


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_replay_routes_by_campaign(event_type: str) -> None:
    routed = route(SETTINGS, orjson.dumps(EVENTS[event_type]), EVENTS[event_type])

    assert (routed.topic, routed.key, routed.routable) == (TOPICS[event_type], b"spring", True)


def test_collector_ids_of_social_definitions() -> None:
    deal, impressions, snapshot = (validate_event(EVENTS[name], None, b"") for name in ("deal", "impressions", "follower_snapshot"))

    assert [event_id_of(event) for event in (deal, impressions, snapshot)] == ["d-1", "i-1", "f-1"]
    assert dedup_key_of(deal) is None
    assert dedup_key_of(impressions) == "impressions:i-1"
    assert dedup_key_of(snapshot) == "snapshot:f-1"
