"""The per-person click-flood check of streams.quality.FloodCheck, on fakeredis."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from redis.asyncio.client import Pipeline

from roitrack.settings import Settings
from streams.crediting import encode_touch
from streams.quality import FloodCheck
from streams.state import Keys, StateStore

MAX_CLICKS = 5
WINDOW_MS = 60_000
BUCKET_START_MS = 1_700_000_040_000  # a multiple of WINDOW_MS
KEYS = Keys("flood-unit")
PERSON_KEY = KEYS.touchpoints(0, "person-1")


def click(event_id: str, time_ms: int, key: str = PERSON_KEY) -> Any:
    """Build a click candidate with the attributes FloodCheck reads."""
    return SimpleNamespace(
        event=SimpleNamespace(event_id=event_id, ip=None), key=key, time_ms=time_ms, touch_class="click"
    )


async def store_touches(client: Any, key: str, touches: list[tuple[str, str, int]]) -> None:
    if touches:
        await client.zadd(key, {encode_touch(event_id, "camp", touch_class): time_ms
                                for event_id, touch_class, time_ms in touches})


def flagged_ids(stored: dict[str, list[tuple[str, str, int]]], batch: list[Any], max_clicks: int = MAX_CLICKS) -> list[str]:
    """Run the person check on a fresh fakeredis and return the flagged event ids in batch order."""

    async def scenario() -> list[str]:
        client = fakeredis.FakeAsyncRedis()
        for key, touches in stored.items():
            await store_touches(client, key, touches)
        check = FloodCheck(Settings(flood_max_clicks=max_clicks, flood_window_s=WINDOW_MS // 1000), StateStore(client, KEYS))
        flagged: set[int] = set()
        await check._person_floods(batch, flagged)
        await client.aclose()
        return [candidate.event.event_id for candidate in batch if id(candidate) in flagged]

    return asyncio.run(scenario())


def stored_clicks(count: int, time_ms: int = BUCKET_START_MS) -> list[tuple[str, str, int]]:
    return [(f"old-{index}", "click", time_ms + index) for index in range(count)]


def batch_clicks(count: int, time_ms: int = BUCKET_START_MS + 1_000) -> list[Any]:
    return [click(f"new-{index}", time_ms + index) for index in range(count)]


class ReadSpy:
    """Counts ZRANGEBYSCORE calls queued on any async pipeline."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        original = Pipeline.zrangebyscore

        def spy(pipe: Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return original(pipe, *args, **kwargs)

        monkeypatch.setattr(Pipeline, "zrangebyscore", spy)


def test_flood_stored_plus_batch_at_limit_not_flagged() -> None:
    assert flagged_ids({PERSON_KEY: stored_clicks(2)}, batch_clicks(3)) == []


def test_flood_one_over_limit_flags_latest_click() -> None:
    assert flagged_ids({PERSON_KEY: stored_clicks(3)}, batch_clicks(3)) == ["new-2"]


def test_flood_batch_alone_over_limit() -> None:
    assert flagged_ids({}, batch_clicks(MAX_CLICKS + 2)) == [f"new-{MAX_CLICKS}", f"new-{MAX_CLICKS + 1}"]


def test_flood_flags_in_time_then_event_id_order() -> None:
    time_ms = BUCKET_START_MS + 1_000
    batch = [click("b", time_ms), click("a", time_ms), click("c", time_ms - 1)]

    # The check counts c (earliest), then a, then b (same time, higher id), so only b is over the limit.
    assert flagged_ids({PERSON_KEY: stored_clicks(MAX_CLICKS - 2)}, batch) == ["b"]


def test_flood_stored_views_not_counted() -> None:
    # The stored views push ZCOUNT over the limit, so the members are read and only the click counts.
    views = [(f"view-{index}", "view", BUCKET_START_MS + index) for index in range(10)]
    engagements = [(f"like-{index}", "engagement", BUCKET_START_MS + 100 + index) for index in range(10)]

    assert flagged_ids({PERSON_KEY: views + engagements + stored_clicks(1)}, batch_clicks(MAX_CLICKS - 1)) == []


def test_flood_stored_clicks_of_other_buckets_not_counted() -> None:
    earlier = stored_clicks(10, BUCKET_START_MS - WINDOW_MS)
    at_next_bucket_start = stored_clicks(10, BUCKET_START_MS + WINDOW_MS)

    assert flagged_ids({PERSON_KEY: earlier + at_next_bucket_start}, batch_clicks(MAX_CLICKS)) == []


def test_flood_last_millisecond_of_bucket_counted() -> None:
    last_ms = BUCKET_START_MS + WINDOW_MS - 1

    assert flagged_ids({PERSON_KEY: stored_clicks(1, last_ms)}, batch_clicks(MAX_CLICKS)) == [f"new-{MAX_CLICKS - 1}"]


def test_flood_people_counted_apart() -> None:
    other_key = KEYS.touchpoints(0, "person-2")
    batch = batch_clicks(3) + [click("other-0", BUCKET_START_MS + 5_000, other_key)]

    assert flagged_ids({PERSON_KEY: stored_clicks(3), other_key: stored_clicks(4)}, batch) == ["new-2"]


def test_flood_members_not_read_within_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ReadSpy(monkeypatch)

    assert flagged_ids({PERSON_KEY: stored_clicks(2)}, batch_clicks(3)) == []
    assert spy.reads == 0


def test_flood_members_read_over_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = ReadSpy(monkeypatch)
    other_key = KEYS.touchpoints(0, "person-2")

    assert flagged_ids({PERSON_KEY: stored_clicks(3)}, batch_clicks(3) + [click("other-0", BUCKET_START_MS, other_key)]) == ["new-2"]
    assert spy.reads == 1


def reference_flagged(stored: dict[str, list[tuple[str, str, int]]], batch: list[Any], max_clicks: int) -> list[str]:
    """Count every stored click of the bucket, then the batch's clicks in time order, as FloodCheck must."""
    flagged: set[str] = set()
    groups: dict[tuple[str, int], list[Any]] = {}
    for candidate in batch:
        groups.setdefault((candidate.key, candidate.time_ms // WINDOW_MS), []).append(candidate)
    for (key, bucket), members in groups.items():
        count = sum(
            1 for _, touch_class, time_ms in stored.get(key, [])
            if touch_class == "click" and time_ms // WINDOW_MS == bucket
        )
        for candidate in sorted(members, key=lambda touch: (touch.time_ms, touch.event.event_id)):
            count += 1
            if count > max_clicks:
                flagged.add(candidate.event.event_id)
    return [candidate.event.event_id for candidate in batch if candidate.event.event_id in flagged]


@pytest.mark.parametrize("seed", range(40))
def test_flood_matches_full_count(seed: int) -> None:
    generator = random.Random(seed)
    max_clicks = generator.randint(1, 6)
    people = [KEYS.touchpoints(0, f"person-{index}") for index in range(3)]
    first_ms = BUCKET_START_MS - WINDOW_MS
    stored = {
        key: [
            (f"{key}-old-{index}", generator.choice(["click", "click", "view", "engagement", "checkin"]),
             generator.randrange(first_ms, first_ms + 3 * WINDOW_MS))
            for index in range(generator.randint(0, 10))
        ]
        for key in people
    }
    batch = [
        click(f"new-{index}", generator.randrange(first_ms, first_ms + 3 * WINDOW_MS), generator.choice(people))
        for index in range(generator.randint(1, 12))
    ]

    assert flagged_ids(stored, batch, max_clicks) == reference_flagged(stored, batch, max_clicks)
