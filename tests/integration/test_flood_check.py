"""The per-person click-flood check: streams.probe's read script and streams.quality.FloodCheck, on the real Redis."""

from __future__ import annotations

import asyncio
import random
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from roitrack.settings import Settings
from streams.crediting import encode_touch
from streams.probe import Probe, ProbeRequest, ProbeResult
from streams.quality import FloodCheck
from streams.state import Keys, StateStore

MAX_CLICKS = 5
WINDOW_MS = 60_000
BUCKET_START_MS = 1_700_000_040_000  # a multiple of WINDOW_MS


@pytest.fixture
def keys(redis_url: str) -> Any:
    """A namespace of this test's own; its keys are deleted afterwards."""
    namespace = f"flood-{uuid.uuid4().hex[:8]}"
    yield Keys(namespace)

    async def clean() -> None:
        client = aioredis.Redis.from_url(redis_url)
        found = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if found:
            await client.unlink(*found)
        await client.aclose()

    asyncio.run(clean())


def person_key(keys: Keys, number: int = 1) -> str:
    return keys.touchpoints(0, f"person-{number}")


def click(event_id: str, time_ms: int, key: str) -> Any:
    """Build a click candidate with the attributes FloodCheck reads."""
    return SimpleNamespace(
        event=SimpleNamespace(event_id=event_id, ip=None), key=key, time_ms=time_ms, touch_class="click",
        member=encode_touch(event_id, "camp", "click"),
    )


def probe_and_flag(
    redis_url: str, keys: Keys, stored: dict[str, list[tuple[str, str, int]]], batch: list[Any], max_clicks: int = MAX_CLICKS,
) -> tuple[list[str], ProbeResult]:
    """Store the touches, probe the batch as the attribution agent does, and return the flagged event ids in batch order."""

    async def scenario() -> tuple[list[str], ProbeResult]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            for key, touches in stored.items():
                if touches:
                    await client.zadd(key, {encode_touch(event_id, "camp", touch_class): time_ms
                                            for event_id, touch_class, time_ms in touches})
            store = StateStore(client, keys)
            check = FloodCheck(Settings(flood_max_clicks=max_clicks, flood_window_s=WINDOW_MS // 1000), store)
            request = ProbeRequest(windows=check.windows(batch))
            for candidate in batch:
                request.add_touch(candidate.key, candidate.member)
            result = await Probe(store, check.window_ms, check.max_clicks).run(request, keys.seen_events(0))
            unflagged, flagged = await check.filter(list(batch), result.window_clicks)
        finally:
            await client.aclose()
        unflagged_ids = {id(candidate) for candidate in unflagged}
        flagged_ids = [candidate.event.event_id for candidate in batch if id(candidate) not in unflagged_ids]
        assert flagged == len(flagged_ids)
        return flagged_ids, result

    return asyncio.run(scenario())


def stored_clicks(count: int, time_ms: int = BUCKET_START_MS) -> list[tuple[str, str, int]]:
    return [(f"old-{index}", "click", time_ms + index) for index in range(count)]


def batch_clicks(key: str, count: int, time_ms: int = BUCKET_START_MS + 1_000) -> list[Any]:
    return [click(f"new-{index}", time_ms + index, key) for index in range(count)]


def test_flood_stored_plus_batch_at_limit_not_flagged(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    flagged, _ = probe_and_flag(redis_url, keys, {key: stored_clicks(2)}, batch_clicks(key, 3))
    assert flagged == []


def test_flood_one_over_limit_flags_latest_click(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    flagged, _ = probe_and_flag(redis_url, keys, {key: stored_clicks(3)}, batch_clicks(key, 3))
    assert flagged == ["new-2"]


def test_flood_batch_alone_over_limit(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    flagged, _ = probe_and_flag(redis_url, keys, {}, batch_clicks(key, MAX_CLICKS + 2))
    assert flagged == [f"new-{MAX_CLICKS}", f"new-{MAX_CLICKS + 1}"]


def test_flood_flags_in_time_then_event_id_order(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    time_ms = BUCKET_START_MS + 1_000
    batch = [click("b", time_ms, key), click("a", time_ms, key), click("c", time_ms - 1, key)]

    # The check counts c (earliest), then a, then b (same time, higher id), so only b is over the limit.
    flagged, _ = probe_and_flag(redis_url, keys, {key: stored_clicks(MAX_CLICKS - 2)}, batch)
    assert flagged == ["b"]


def test_flood_stored_views_not_counted(redis_url: str, keys: Keys) -> None:
    # The stored views push ZCOUNT over the limit, so the members are read and only the click counts.
    key = person_key(keys)
    views = [(f"view-{index}", "view", BUCKET_START_MS + index) for index in range(10)]
    engagements = [(f"like-{index}", "engagement", BUCKET_START_MS + 100 + index) for index in range(10)]
    checkins = [(f"visit-{index}", "checkin", BUCKET_START_MS + 200 + index) for index in range(10)]

    flagged, result = probe_and_flag(
        redis_url, keys, {key: views + engagements + checkins + stored_clicks(1)}, batch_clicks(key, MAX_CLICKS - 1),
    )
    assert flagged == []
    assert result.window_clicks == {(key, BUCKET_START_MS // WINDOW_MS): 1}


def test_flood_stored_clicks_of_other_buckets_not_counted(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    earlier = stored_clicks(10, BUCKET_START_MS - WINDOW_MS)
    at_next_bucket_start = stored_clicks(10, BUCKET_START_MS + WINDOW_MS)

    flagged, _ = probe_and_flag(redis_url, keys, {key: earlier + at_next_bucket_start}, batch_clicks(key, MAX_CLICKS))
    assert flagged == []


def test_flood_last_millisecond_of_bucket_counted(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    last_ms = BUCKET_START_MS + WINDOW_MS - 1

    flagged, _ = probe_and_flag(redis_url, keys, {key: stored_clicks(1, last_ms)}, batch_clicks(key, MAX_CLICKS))
    assert flagged == [f"new-{MAX_CLICKS - 1}"]


def test_flood_people_counted_apart(redis_url: str, keys: Keys) -> None:
    key, other_key = person_key(keys, 1), person_key(keys, 2)
    batch = batch_clicks(key, 3) + [click("other-0", BUCKET_START_MS + 5_000, other_key)]

    flagged, _ = probe_and_flag(redis_url, keys, {key: stored_clicks(3), other_key: stored_clicks(4)}, batch)
    assert flagged == ["new-2"]


def test_flood_members_not_read_within_limit(redis_url: str, keys: Keys) -> None:
    key = person_key(keys)
    flagged, result = probe_and_flag(redis_url, keys, {key: stored_clicks(2)}, batch_clicks(key, 3))

    assert flagged == []
    assert result.window_clicks == {}  # the bound sufficed: no exact count came back


def test_flood_members_read_over_bound(redis_url: str, keys: Keys) -> None:
    key, other_key = person_key(keys, 1), person_key(keys, 2)
    batch = batch_clicks(key, 3) + [click("other-0", BUCKET_START_MS, other_key)]

    flagged, result = probe_and_flag(redis_url, keys, {key: stored_clicks(3)}, batch)
    assert flagged == ["new-2"]
    assert result.window_clicks == {(key, BUCKET_START_MS // WINDOW_MS): 3}


def test_probe_reports_stored_touches_and_seen_ids(redis_url: str, keys: Keys) -> None:
    """The dedup half of the probe: one flag per member asked, in order, and the seen ids."""
    key, other_key = person_key(keys, 1), person_key(keys, 2)

    async def scenario() -> ProbeResult:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.zadd(key, {encode_touch("old", "camp", "click"): BUCKET_START_MS})
            # Ids reach Lua through JSON: a non-ASCII id must still match its stored bytes.
            await client.zadd(keys.seen_events(0), {"e:p1": 1, "o:purchase:o-9": 2, "o:purchase:o-\u00e9": 3})
            store = StateStore(client, keys)
            request = ProbeRequest(
                seen_ids=["e:p1", "e:p2", "o:purchase:o-9", "o:purchase:o-\u00e9", "o:purchase:o-e"],
            )
            request.add_touch(key, encode_touch("new", "camp", "click"))
            request.add_touch(other_key, encode_touch("old", "camp", "click"))
            request.add_touch(key, encode_touch("old", "camp", "click"))
            return await Probe(store, WINDOW_MS, MAX_CLICKS).run(request, keys.seen_events(0))
        finally:
            await client.aclose()

    result = asyncio.run(scenario())
    assert result.stored == b"001"
    assert result.seen == {"e:p1", "o:purchase:o-9", "o:purchase:o-\u00e9"}
    assert result.window_clicks == {}


def test_probe_of_an_empty_batch_sends_nothing(redis_url: str, keys: Keys) -> None:
    async def scenario() -> ProbeResult:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1")  # nothing listens: a call would fail
        return await Probe(StateStore(client, keys), WINDOW_MS, MAX_CLICKS).run(ProbeRequest(), keys.seen_events(0))

    assert asyncio.run(scenario()) == ProbeResult()


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
def test_flood_matches_full_count(redis_url: str, keys: Keys, seed: int) -> None:
    generator = random.Random(seed)
    max_clicks = generator.randint(1, 6)
    people = [person_key(keys, index) for index in range(3)]
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

    flagged, _ = probe_and_flag(redis_url, keys, stored, batch, max_clicks)
    assert flagged == reference_flagged(stored, batch, max_clicks)
