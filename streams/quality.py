"""Traffic quality: bot user agents and click floods.

Flagged touchpoints are counted and not stored, so they never earn credit.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Sequence

from roitrack.settings import Settings
from streams.state import StateStore

if TYPE_CHECKING:
    from streams.attribution import TouchCandidate

_SEPARATOR = b"\x1f"


def is_bot(user_agent: str | None, patterns: Sequence[str]) -> bool:
    """Return True when the user agent contains one of the (lowercase) patterns."""
    if not user_agent:
        return False
    lowered = user_agent.lower()
    return any(pattern in lowered for pattern in patterns)


class FloodCheck:
    """Flags clicks beyond ``flood_max_clicks`` per person or per address in a window.

    Windows are fixed buckets of ``flood_window_s`` seconds of event time. Per
    person, the stored clicks of the bucket are counted, then the batch's clicks
    in time order, so a replayed batch flags the same clicks. Per truncated IP
    address the click ids go into a shared Redis set per bucket; once the set
    contains more than the limit, the address's further clicks in that bucket are
    flagged.
    """

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.window_ms = settings.flood_window_s * 1000
        self.max_clicks = settings.flood_max_clicks

    async def filter(self, partition: int, touches: list["TouchCandidate"]) -> tuple[list["TouchCandidate"], int]:
        clicks = [touch for touch in touches if touch.touch_class == "click"]
        if not clicks:
            return touches, 0
        flagged: set[int] = set()
        await self._person_floods(clicks, flagged)
        await self._address_floods(clicks, flagged)
        if not flagged:
            return touches, 0
        kept = [touch for touch in touches if id(touch) not in flagged]
        return kept, len(flagged)

    async def _person_floods(self, clicks: list["TouchCandidate"], flagged: set[int]) -> None:
        groups: dict[tuple[str, int], list["TouchCandidate"]] = defaultdict(list)
        for click in clicks:
            groups[(click.key, click.time_ms // self.window_ms)].append(click)
        # ZCOUNT counts every stored touch of the bucket, views and engagements too, so
        # it is an upper bound on the stored clicks. A group whose bound plus its batch
        # clicks stays within the limit cannot flag anything, and its members are not read.
        pipe = self.store.client.pipeline(transaction=False)
        for key, bucket in groups:
            start_ms = bucket * self.window_ms
            pipe.zcount(key, start_ms, f"({start_ms + self.window_ms}")
        bounds = await pipe.execute()
        near_limit = [
            (group, members)
            for (group, members), bound in zip(groups.items(), bounds)
            if int(bound) + len(members) > self.max_clicks
        ]
        if not near_limit:
            return
        pipe = self.store.client.pipeline(transaction=False)
        for (key, bucket), _ in near_limit:
            start_ms = bucket * self.window_ms
            pipe.zrangebyscore(key, start_ms, f"({start_ms + self.window_ms}")
        stored_lists = await pipe.execute()
        for (_, members), stored in zip(near_limit, stored_lists):
            count = sum(1 for member in stored if member.endswith(_SEPARATOR + b"click"))
            for click in sorted(members, key=lambda touch: (touch.time_ms, touch.event.event_id)):
                count += 1
                if count > self.max_clicks:
                    flagged.add(id(click))

    async def _address_floods(self, clicks: list["TouchCandidate"], flagged: set[int]) -> None:
        groups: dict[tuple[str, int], list["TouchCandidate"]] = defaultdict(list)
        for click in clicks:
            if click.event.ip is not None and id(click) not in flagged:
                groups[(click.event.ip, click.time_ms // self.window_ms)].append(click)
        if not groups:
            return
        keys = self.store.keys
        pipe = self.store.client.pipeline(transaction=False)
        for (address, bucket), members in groups.items():
            key = keys.flood_address(address, bucket)
            pipe.sadd(key, *[member.event.event_id for member in members])
            pipe.scard(key)
            pipe.pexpire(key, self.window_ms * 2)
        results = await pipe.execute()
        for index, members in enumerate(groups.values()):
            if int(results[index * 3 + 1]) > self.max_clicks:
                flagged.update(id(member) for member in members)
