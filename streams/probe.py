"""One Redis read per person partition batch, before anything of the batch is written.

The attribution agent needs three facts from Redis before it can plan a
batch's writes:

- which of the batch's touchpoints are stored already (a repeat is dropped),
- which conversion event ids and order ids were seen within the deduplication
  horizon,
- how many stored clicks each of the batch's people has in each flood window
  (``streams.quality.FloodCheck``).

A redis-py pipeline with one command per person key and window parses each
reply in Python and arms a read timeout for it. In the batched benchmark those
two pipelines took 17 % of the worker's CPU time. The script below returns all
three facts in one call. It takes one JSON
argument, decoded by Redis's bundled ``cjson``, and returns two strings of
``0``/``1`` flags and one integer per flood window. Every key it touches
carries the partition's hash tag and is passed in KEYS, so it runs on Redis
Cluster too.

For a flood window it returns ``2 * count + exact``. It first counts every
stored touch of the window (``ZCOUNT``, an upper bound on the clicks). Only
when that bound plus the batch's clicks in the window exceeds the limit does it
read the members and count the clicks exactly (``exact`` = 1). The batch's
clicks include repeats that the agent drops afterwards, so the exact count is
read whenever the old two-step check would have read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import orjson

if TYPE_CHECKING:
    from streams.state import StateStore

# KEYS: the person keys, then the seen-events key (when there are ids to test).
# ARGV[1]: JSON {"t": [key index, member, key index, member, ...], "s": [seen id, ...],
# "sk": index of the seen key, "f": [key index, window number, batch clicks, ...],
# "w": window length in ms, "max": flood limit}. A window's bounds are products
# below 2^53, so Lua's doubles hold them exactly and '%d' writes them back.
_PROBE_LUA = r"""
local req = cjson.decode(ARGV[1])
local touch_flags = {}
local touches = req.t
for i = 1, #touches, 2 do
  touch_flags[(i + 1) / 2] = redis.call('ZSCORE', KEYS[touches[i]], touches[i + 1]) and '1' or '0'
end
local seen_flags = {}
if #req.s > 0 then
  local seen_key = KEYS[req.sk]
  for i, id in ipairs(req.s) do
    seen_flags[i] = redis.call('ZSCORE', seen_key, id) and '1' or '0'
  end
end
local flood = {}
local windows = req.f
for i = 1, #windows, 3 do
  local key = KEYS[windows[i]]
  local low = string.format('%d', windows[i + 1] * req.w)
  local high = '(' .. string.format('%d', (windows[i + 1] + 1) * req.w)
  local bound = redis.call('ZCOUNT', key, low, high)
  local result
  if bound + windows[i + 2] > req.max then
    local clicks = 0
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, low, high)) do
      if string.sub(member, -6) == '\31click' then
        clicks = clicks + 1
      end
    end
    result = clicks * 2 + 1
  else
    result = bound * 2
  end
  flood[(i + 2) / 3] = result
end
return {table.concat(touch_flags), table.concat(seen_flags), flood}
"""

#: A flood window: (person key, window number).
Window = tuple[str, int]


@dataclass(slots=True)
class ProbeRequest:
    """Reads requested for one batch: touches by person key, seen ids, and clicks per flood window."""

    #: Person key -> its index in KEYS (from 1), in the order first seen.
    key_index: dict[str, int] = field(default_factory=dict)
    #: Flat (key index, member) pairs, in the batch's order.
    touches: list[int | str] = field(default_factory=list)
    seen_ids: list[str] = field(default_factory=list)
    windows: dict[Window, int] = field(default_factory=dict)  # window -> the batch's clicks in it

    def add_touch(self, key: str, member: str) -> None:
        """Ask whether ``member`` is stored in the sorted set ``key``."""
        number = self.key_index.get(key)
        if number is None:
            number = self.key_index[key] = len(self.key_index) + 1
        self.touches.append(number)
        self.touches.append(member)

    @property
    def empty(self) -> bool:
        return not self.touches and not self.seen_ids


@dataclass(slots=True)
class ProbeResult:
    """Results of one probe, in the order of the request."""

    #: One byte per requested touch, in order: ``b"1"`` when it is stored, else ``b"0"``.
    stored: bytes = b""
    seen: set[str] = field(default_factory=set)
    #: Stored clicks per flood window, present only where the limit could be passed.
    window_clicks: dict[Window, int] = field(default_factory=dict)


class Probe:
    """Read script of the attribution agent, registered once per worker."""

    def __init__(self, store: "StateStore", window_ms: int, max_clicks: int) -> None:
        self.store = store
        self.window_ms = window_ms
        self.max_clicks = max_clicks
        self._script = store.client.register_script(_PROBE_LUA)

    async def run(self, request: ProbeRequest, seen_key: str) -> ProbeResult:
        """Run the script for one person partition's batch; an empty request sends nothing."""
        result = ProbeResult()
        if request.empty:
            return result
        key_index = request.key_index
        person_keys = list(key_index)
        windows: Sequence[Window] = list(request.windows)
        flat_windows: list[int] = []
        for (key, bucket), clicks in request.windows.items():
            flat_windows.extend((key_index[key], bucket, clicks))
        payload = {
            "t": request.touches,
            "s": request.seen_ids,
            "sk": len(person_keys) + 1,
            "f": flat_windows,
            "w": self.window_ms,
            "max": self.max_clicks,
        }
        keys = person_keys + [seen_key] if request.seen_ids else person_keys
        result.stored, seen_flags, flood = await self._script(keys=keys, args=[orjson.dumps(payload)])
        result.seen = {seen_id for seen_id, flag in zip(request.seen_ids, seen_flags) if flag == 49}
        for window, value in zip(windows, flood):
            if value & 1:
                result.window_clicks[window] = value >> 1
        return result
