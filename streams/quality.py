"""Traffic quality: bot user agents and click floods.

Flagged touchpoints are counted and not stored, so they never earn credit.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Sequence

from roitrack.settings import Settings
from streams.probe import Window
from streams.state import StateStore

if TYPE_CHECKING:
    from streams.attribution import TouchCandidate

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

    def windows(self, touches: Sequence["TouchCandidate"]) -> dict[Window, int]:
        """Count the clicks per (person key, window) of a batch, for ``streams.probe``."""
        counts: dict[Window, int] = defaultdict(int)
        for touch in touches:
            if touch.touch_class == "click":
                counts[(touch.key, touch.time_ms // self.window_ms)] += 1
        return counts

    async def filter(
        self, touches: list["TouchCandidate"], window_clicks: dict[Window, int]
    ) -> tuple[list["TouchCandidate"], int]:
        """Drop flagged clicks; ``window_clicks`` contains the stored clicks that ``streams.probe`` read."""
        clicks = [touch for touch in touches if touch.touch_class == "click"]
        if not clicks:
            return touches, 0
        flagged: set[int] = set()
        self._person_floods(clicks, window_clicks, flagged)
        await self._address_floods(clicks, flagged)
        if not flagged:
            return touches, 0
        unflagged = [touch for touch in touches if id(touch) not in flagged]
        return unflagged, len(flagged)

    def _person_floods(
        self, clicks: list["TouchCandidate"], window_clicks: dict[Window, int], flagged: set[int]
    ) -> None:
        # The probe reads a window's stored clicks only when its stored touches plus
        # the batch's clicks could pass the limit; any other window flags nothing.
        groups: dict[Window, list["TouchCandidate"]] = defaultdict(list)
        for click in clicks:
            window = (click.key, click.time_ms // self.window_ms)
            if window in window_clicks:
                groups[window].append(click)
        for window, members in groups.items():
            count = window_clicks[window]
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
