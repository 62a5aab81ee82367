"""Releasing pending conversions: when they are due, and which touchpoints they see."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from roitrack.attribution import StoredTouch
from streams.crediting import PendingConversion, decode_touch
from streams.state import partition_for_key

if TYPE_CHECKING:
    from streams.attribution import AttributionProcessor, PartitionState

log = logging.getLogger(__name__)


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
        """Read each conversion's touchpoints: the person's, and those of linked anonymous ids."""
        lookback_ms = max(self.processor.params.lookback_click_ms, self.processor.params.lookback_view_ms)
        alias_pipe = self.store.client.pipeline(transaction=False)
        for pending in due:
            alias_pipe.smembers(self.keys.aliases(partition, pending.person_id))
        alias_sets = await alias_pipe.execute()

        key_lists: list[list[str]] = []
        for pending, members in zip(due, alias_sets):
            anonymous_ids = {member.decode() for member in members}
            if pending.anonymous_id is not None:
                anonymous_ids.add(pending.anonymous_id)
            anonymous_ids.discard(pending.person_id)
            keys = [self.keys.touchpoints(partition, pending.person_id)]
            for anonymous_id in sorted(anonymous_ids):
                alias_partition = partition_for_key(anonymous_id.encode(), self.settings.person_partitions)
                keys.append(self.keys.touchpoints(alias_partition, anonymous_id))
            key_lists.append(keys)

        pipe = self.store.client.pipeline(transaction=False)
        for pending, keys in zip(due, key_lists):
            for key in keys:
                pipe.zrangebyscore(key, pending.time_ms - lookback_ms, pending.time_ms, withscores=True)
        results = iter(await pipe.execute())
        touches: list[list[StoredTouch]] = []
        for keys in key_lists:
            found: dict[str, StoredTouch] = {}
            for _ in keys:
                for member, score in next(results):
                    touch = decode_touch(member, score)
                    found.setdefault(touch.event_id, touch)
            touches.append(list(found.values()))
        return touches

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
