"""Releasing pending conversions: when they are due, and which touchpoints they see."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from roitrack.attribution import StoredTouch
from streams.crediting import PendingConversion, decode_touch
from streams.state import partition_for_key

if TYPE_CHECKING:
    from streams.attribution import AttributionProcessor, PartitionState

log = logging.getLogger(__name__)

#: Reads, per conversion, the person's alias set and their touchpoints inside the
#: lookback window, in one call. KEYS: alias set, touchpoint key, per conversion;
#: ARGV: lowest and highest score, per conversion. The keys of one call share the
#: partition's hash tag, so the script also runs on Redis Cluster. Scores are
#: epoch milliseconds, which Lua numbers hold exactly, returned as integers.
_READ_TOUCHES_LUA = """
local replies = {}
for i = 1, #KEYS / 2 do
  local aliases = redis.call('SMEMBERS', KEYS[2 * i - 1])
  local found = redis.call('ZRANGEBYSCORE', KEYS[2 * i], ARGV[2 * i - 1], ARGV[2 * i], 'WITHSCORES')
  for j = 2, #found, 2 do
    found[j] = tonumber(found[j])
  end
  replies[i] = {aliases, found}
end
return replies
"""
#: Conversions per script call, at most.
READ_TOUCHES_CHUNK = 1000
#: Stored touchpoints one script call may read at most, counting each person at
#: ROITRACK_MAX_TOUCHPOINTS_PER_PERSON. A call that read 256,000 took 177 ms of
#: Redis time here, so this bound keeps a call near 70 ms.
READ_TOUCHES_BUDGET = 100_000


class Releaser:
    """Decides which pending conversions are due and gathers their touchpoints."""

    def __init__(
        self,
        processor: "AttributionProcessor",
        end_offset: Callable[[str, int], Awaitable[int | None]] | None,
    ) -> None:
        self.processor = processor
        self.settings = processor.settings
        self.store = processor.store
        self.keys = processor.keys
        self.end_offset = end_offset
        self.settle_ms = int(processor.settings.conversion_settle_s * 1000)
        self._read_touches = self.store.client.register_script(_READ_TOUCHES_LUA)

    async def due(self, partition: int, state: "PartitionState") -> list[PendingConversion]:
        """Select pending conversions that may be attributed now.

        A conversion is due once the partition's touchpoints have moved past
        its event time plus the settle delay. Otherwise, once it waited the
        idle-release time, it is due only if this worker has applied every
        touchpoint the broker holds for the partition, so a backlog of
        touchpoints is never skipped.
        """
        now_s = time.monotonic()
        idle_s = self.settings.conversion_idle_release_s
        due = []
        waiting = []
        for pending in state.pending.values():
            if pending.time_ms + self.settle_ms <= state.watermark_ms:
                due.append(pending)
            elif now_s - pending.arrived_s >= idle_s:
                waiting.append(pending)
        if waiting and await self._touchpoints_caught_up(partition, state, now_s):
            log.info(
                "person partition=%d: idle release of %d conversion(s) (earliest event time %d ms) "
                "at watermark %d ms, touchpoints applied up to offset %d",
                partition, len(waiting), min(pending.time_ms for pending in waiting), state.watermark_ms,
                state.offsets.get(self.settings.topic_touchpoints, -1),
            )
            due.extend(waiting)
        return due

    async def touchpoints_caught_up(self, partition: int, state: "PartitionState", now_s: float) -> bool:
        """Return True when no touchpoint arrived for the idle-release time and none is left to apply."""
        return await self._touchpoints_caught_up(partition, state, now_s)

    async def _touchpoints_caught_up(self, partition: int, state: "PartitionState", now_s: float) -> bool:
        if now_s - state.last_touch_arrival_s < self.settings.conversion_idle_release_s:
            return False  # touchpoints are still arriving
        if self.end_offset is None:
            return True
        topic = self.settings.topic_touchpoints
        end_offset = await self.end_offset(topic, partition)
        if end_offset is None:
            return False
        return state.offsets.get(topic, -1) + 1 >= end_offset

    async def touches_for(self, partition: int, due: list[PendingConversion]) -> list[list[StoredTouch]]:
        """Read each conversion's touchpoints: the person's, and those of linked anonymous ids.

        One script call per chunk of conversions reads the persons' aliases and
        touchpoints. The touchpoints of anonymous ids follow in one pipeline, only
        when there are any, because they can sit on another partition.
        """
        replies = [await self._read_touches(keys=keys, args=args) for keys, args in self.touch_reads(partition, due)]
        return await self.gather_touches(due, replies)

    def touch_reads(self, partition: int, due: list[PendingConversion]) -> list[tuple[list[str], list[int]]]:
        """Return the KEYS and ARGV of each call of the read script, one call per chunk of ``due``."""
        lookback_ms = self._lookback_ms()
        chunk_size = max(1, min(READ_TOUCHES_CHUNK, READ_TOUCHES_BUDGET // self.settings.max_touchpoints_per_person))
        calls: list[tuple[list[str], list[int]]] = []
        for start in range(0, len(due), chunk_size):
            keys: list[str] = []
            args: list[int] = []
            for pending in due[start : start + chunk_size]:
                keys.extend((self.keys.aliases(partition, pending.person_id),
                             self.keys.touchpoints(partition, pending.person_id)))
                args.extend((pending.time_ms - lookback_ms, pending.time_ms))
            calls.append((keys, args))
        return calls

    async def gather_touches(self, due: list[PendingConversion], replies: Sequence[Any]) -> list[list[StoredTouch]]:
        """Decode the read script's replies (one per chunk of ``due``) and read the anonymous ids' touchpoints."""
        lookback_ms = self._lookback_ms()
        found: list[dict[str, StoredTouch]] = []
        extra: list[tuple[int, str]] = []  # (index in due, touchpoint key of an anonymous id)
        rows = (row for reply in replies for row in reply)
        for pending, (members, flat) in zip(due, rows):
            touches: dict[str, StoredTouch] = {}
            for member, score in zip(flat[::2], flat[1::2]):
                touch = decode_touch(member, score)
                touches.setdefault(touch.event_id, touch)
            anonymous_ids = {member.decode() for member in members}
            if pending.anonymous_id is not None:
                anonymous_ids.add(pending.anonymous_id)
            anonymous_ids.discard(pending.person_id)
            for anonymous_id in sorted(anonymous_ids):
                alias_partition = partition_for_key(anonymous_id.encode(), self.settings.person_partitions)
                extra.append((len(found), self.keys.touchpoints(alias_partition, anonymous_id)))
            found.append(touches)

        if extra:
            pipe = self.store.client.pipeline(transaction=False)
            for index, key in extra:
                time_ms = due[index].time_ms
                pipe.zrangebyscore(key, time_ms - lookback_ms, time_ms, withscores=True)
            for (index, _), rows_of_key in zip(extra, await pipe.execute()):
                for member, score in rows_of_key:
                    touch = decode_touch(member, score)
                    found[index].setdefault(touch.event_id, touch)
        return [list(touches.values()) for touches in found]

    def _lookback_ms(self) -> int:
        return max(self.processor.params.lookback_click_ms, self.processor.params.lookback_view_ms)

    def merge_coupon_redemptions(
        self, due: list[PendingConversion], state: "PartitionState"
    ) -> tuple[list[PendingConversion], list[bytes]]:
        """Fold a redemption into the purchase with the same order id, so the order counts once."""
        purchases = {
            (pending.person_id, pending.order_id): pending
            for pending in state.pending.values()
            if pending.conversion_type == "purchase" and pending.order_id
        }
        merged = []
        folded: list[bytes] = []
        for pending in due:
            if pending.conversion_type == "coupon_redemption" and pending.order_id:
                purchase = purchases.get((pending.person_id, pending.order_id))
                if purchase is not None:
                    if purchase.coupon_code is None:
                        purchase.coupon_code = pending.coupon_code
                    # The redemption leaves the pending set with this release;
                    # its purchase carries the coupon from now on.
                    folded.append(pending.member)
                    continue
            merged.append(pending)
        return merged, folded
