"""Attribution: store touchpoints per person and credit conversions to campaigns.

``AttributionProcessor`` consumes the co-partitioned ``touchpoints`` and
``conversions`` topics. For each batch and partition it

1. skips messages at or below the offsets already applied in Redis,
2. sends rejected events to the dead-letter topic,
3. writes touchpoints and pending conversions to Redis in one fenced script
   call, together with the offsets they came from,
4. releases conversions whose settle delay has passed: reads the person's
   touchpoints, credits campaigns under every model, sends the Attribution
   and one credit per campaign, and only then removes them from the pending
   set. A crash before that removal re-sends the same credits, which the ROI
   processor drops by credit id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Awaitable, Callable, Sequence

import orjson

from roitrack.attribution import (
    AttributionParams,
    StoredTouch,
    credit_all_models,
    credit_coupon,
    eligible_touches,
    revenue_shares,
)
from roitrack.settings import Settings
from schemas.common import epoch_ms
from schemas.decode import Rejected, decode_message
from schemas.events import CheckIn, Click, CouponRedemption, Purchase, SocialTouch
from schemas.outputs import DEFAULT_MODEL, FieldError
from streams.records import Outgoing, Record, Send, dead_letter, decimal_text, iso_ms, rejected_dead_letter
from streams.state import FencedBatch, StaleBatch, StateStore

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"  # ids cannot contain control characters, so this never collides
WATERMARK_FIELD = "_watermark_ms"

_REMOVE_PENDING_LUA = """
local removed = 0
for i = 1, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
end
return removed
"""


@dataclass(slots=True)
class PendingConversion:
    """A conversion waiting for its settle delay, as stored in Redis."""

    member: bytes
    conversion_id: str
    conversion_type: str
    person_id: str
    order_id: str | None
    amount: Decimal
    currency: str
    coupon_code: str | None
    time_ms: int
    arrived_s: float


@dataclass(slots=True)
class PartitionState:
    """What this worker knows of one person partition."""

    offsets: dict[str, int]
    watermark_ms: int
    pending: dict[bytes, PendingConversion] = field(default_factory=dict)
    last_touch_arrival_s: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def encode_touch(event_id: str, campaign_id: str, touch_class: str) -> str:
    return f"{event_id}{_SEPARATOR}{campaign_id}{_SEPARATOR}{touch_class}"


def decode_touch(member: bytes, score: float) -> StoredTouch:
    event_id, campaign_id, touch_class = member.decode().split(_SEPARATOR)
    return StoredTouch(event_id, campaign_id, touch_class, int(score))  # type: ignore[arg-type]  # written by encode_touch from a TouchClass


def _pending_from_member(member: bytes, arrived_s: float) -> PendingConversion:
    data = orjson.loads(member)
    return PendingConversion(
        member=member,
        conversion_id=data["id"],
        conversion_type=data["type"],
        person_id=data["person"],
        order_id=data.get("order"),
        amount=Decimal(data["amount"]),
        currency=data["currency"],
        coupon_code=data.get("coupon"),
        time_ms=int(data["t"]),
        arrived_s=arrived_s,
    )


class AttributionProcessor:
    """Stores touchpoints and attributes conversions; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        send: Send,
        touch_end_offset: Callable[[int], Awaitable[int | None]] | None = None,
    ) -> None:
        """``touch_end_offset(partition)`` returns the broker's end offset of that
        touchpoints partition, or None when unknown."""
        self.settings = settings
        self.touch_end_offset = touch_end_offset
        self.store = store
        self.keys = store.keys
        self.send = send
        self.params = AttributionParams(
            lookback_click_ms=settings.lookback_click_s * 1000,
            lookback_view_ms=settings.lookback_view_s * 1000,
            half_life_ms=settings.half_life_s * 1000,
            position_first_share=settings.position_first_share,
            position_last_share=settings.position_last_share,
        )
        self.settle_ms = int(settings.conversion_settle_s * 1000)
        self.partitions: dict[int, PartitionState] = {}
        self._remove_pending = store.client.register_script(_REMOVE_PENDING_LUA)
        self.stats: dict[str, int] = defaultdict(int)

    # --- partition lifecycle --------------------------------------------

    async def _partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            offsets_key = self.keys.offsets(self.keys.person_tag(partition))
            offsets = await self.store.load_offsets(offsets_key)
            watermark_ms = offsets.pop(WATERMARK_FIELD, 0)
            state = PartitionState(offsets=offsets, watermark_ms=watermark_ms)
            now_s = time.monotonic()
            members: list[bytes] = await self.store.client.zrange(self.keys.pending(partition), 0, -1)  # type: ignore[assignment]  # the client returns bytes (decode_responses=False)
            for member in members:
                state.pending[member] = _pending_from_member(member, now_s)
            self.partitions[partition] = state
            log.info(
                "loaded person partition=%d offsets=%s pending=%d watermark_ms=%d",
                partition, offsets, len(state.pending), watermark_ms,
            )
        return state

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop cached state of partitions this worker no longer owns."""
        for partition in partitions:
            self.partitions.pop(partition, None)

    # --- ingest ----------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> None:
        """Handle one batch of records from the touchpoints and conversions topics."""
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        for partition, partition_records in sorted(by_partition.items()):
            state = await self._partition(partition)
            async with state.lock:
                try:
                    await self._ingest(partition, state, partition_records)
                    await self._release(partition, state)
                except BaseException:
                    # Reload from Redis on the next batch rather than trust a half-updated cache.
                    self.partitions.pop(partition, None)
                    raise

    async def _ingest(self, partition: int, state: PartitionState, records: Sequence[Record]) -> None:
        settings = self.settings
        batch = FencedBatch(self.keys.offsets(self.keys.person_tag(partition)))
        dead: list[Outgoing] = []
        touches: dict[str, list[str | int]] = defaultdict(list)
        new_pending: list[PendingConversion] = []
        watermark_ms = state.watermark_ms
        now_s = time.monotonic()
        wall_ms = int(time.time() * 1000)
        touch_count = 0

        for record in records:
            if record.offset <= state.offsets.get(record.topic, -1):
                continue  # applied before a restart or a rebalance
            batch.cover(record.topic, record.offset, record.offset)
            for item in decode_message(record.value):
                if isinstance(item, Rejected):
                    dead.append(rejected_dead_letter(
                        settings.topic_dead_letters, record, item, "attribution.decode",
                        settings.dead_letter_payload_max_bytes,
                    ))
                    continue
                if isinstance(item, (Click, SocialTouch, CheckIn)) and record.topic == settings.topic_touchpoints:
                    touch = self._touch_member(item)
                    if touch is not None:
                        member, time_ms = touch
                        touches[self.keys.touchpoints(partition, item.person_id)].extend((time_ms, member))
                        touch_count += 1
                        watermark_ms = max(watermark_ms, min(time_ms, wall_ms))
                    continue
                if isinstance(item, (Purchase, CouponRedemption)) and record.topic == settings.topic_conversions:
                    problem = self._conversion_problem(item)
                    if problem is not None:
                        dead.append(dead_letter(
                            settings.topic_dead_letters, record, "unsupported", [problem],
                            "attribution.convert", settings.dead_letter_payload_max_bytes,
                            raw=orjson.dumps(item.model_dump(mode="json")),
                        ))
                        continue
                    new_pending.append(self._pending(item, now_s))
                    continue
                dead.append(dead_letter(
                    settings.topic_dead_letters, record, "unsupported",
                    [FieldError(field="type", value=item.type,  # type: ignore[attr-defined]  # every input model has a type literal
                                reason=f"event type does not belong on topic {record.topic}; send it to its own topic")],
                    "attribution.route", settings.dead_letter_payload_max_bytes,
                    raw=orjson.dumps(item.model_dump(mode="json")),
                ))

        if dead:
            # Dead letters go out before the offsets move, so a crash cannot lose them.
            await self.send(dead)
            self.stats["dead_letters"] += len(dead)
            log.warning("sent %d dead letter(s) from person partition=%d", len(dead), partition)

        ttl_ms = settings.touchpoint_ttl_s * 1000
        for key, pairs in touches.items():
            batch.command("ZADD", key, *pairs)
            batch.command("ZREMRANGEBYRANK", key, 0, -(settings.max_touchpoints_per_person + 1))
            batch.command("ZREMRANGEBYSCORE", key, "-inf", f"({watermark_ms - ttl_ms}")
            batch.command("PEXPIRE", key, ttl_ms)
        if new_pending:
            pairs_pending: list[str | int | bytes] = []
            for pending in new_pending:
                pairs_pending.extend((pending.time_ms, pending.member))
            batch.command("ZADD", self.keys.pending(partition), *pairs_pending)
        stats_key = self.keys.person_stats(partition)
        if touch_count:
            batch.command("HINCRBY", stats_key, "touchpoints", touch_count)
        if new_pending:
            batch.command("HINCRBY", stats_key, "conversions_received", len(new_pending))
        if dead:
            batch.command("HINCRBY", stats_key, "dead_letters", len(dead))
        if watermark_ms != state.watermark_ms:
            batch.command("HSET", batch.offsets_key, WATERMARK_FIELD, watermark_ms)

        try:
            await self.store.apply(batch)
        except StaleBatch as exc:
            log.warning("person partition=%d: %s", partition, exc)
            self.partitions.pop(partition, None)
            return

        for topic, (_, last) in batch.offset_ranges.items():
            state.offsets[topic] = last
        state.watermark_ms = watermark_ms
        if touch_count:
            state.last_touch_arrival_s = now_s
        for pending in new_pending:
            state.pending[pending.member] = pending
        self.stats["touchpoints"] += touch_count
        self.stats["conversions_received"] += len(new_pending)

    def _touch_member(self, event: Click | SocialTouch | CheckIn) -> tuple[str, int] | None:
        if isinstance(event, Click):
            touch_class = "click"
        elif isinstance(event, SocialTouch):
            if event.kind == "view":
                touch_class = "view"
            elif event.kind in self.settings.engagement_touch_kinds:
                touch_class = "engagement"
            else:
                return None
        else:
            if event.campaign_id is None:
                return None  # a check-in without a campaign credits nothing
            touch_class = "checkin"
        return encode_touch(event.event_id, event.campaign_id, touch_class), epoch_ms(event.event_time)  # type: ignore[arg-type]  # campaign_id is set on every branch that reaches here

    def _conversion_problem(self, event: Purchase | CouponRedemption) -> FieldError | None:
        currency = event.currency
        if currency is not None and currency != self.settings.reporting_currency and (
            isinstance(event, Purchase) or event.discount
        ):
            return FieldError(
                field="currency",
                value=currency,
                reason=(
                    f"only the reporting currency {self.settings.reporting_currency} is supported; "
                    "convert amounts before producing them or change ROITRACK_REPORTING_CURRENCY"
                ),
            )
        return None

    def _pending(self, event: Purchase | CouponRedemption, now_s: float) -> PendingConversion:
        amount = event.amount if isinstance(event, Purchase) else Decimal(0)
        coupon: str | None = event.coupon_code
        order: str | None = event.order_id
        data = {
            "id": event.event_id,
            "type": event.type,
            "person": event.person_id,
            "order": order,
            "amount": format(amount, "f"),
            "currency": self.settings.reporting_currency,
            "coupon": coupon,
            "t": epoch_ms(event.event_time),
        }
        member = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        return _pending_from_member(member, now_s)

    # --- release ---------------------------------------------------------

    async def release_due(self) -> None:
        """Attribute every conversion whose settle delay has passed, on every owned partition."""
        for partition, state in list(self.partitions.items()):
            if state.pending and not state.lock.locked():
                async with state.lock:
                    try:
                        await self._release(partition, state)
                    except BaseException:
                        self.partitions.pop(partition, None)
                        raise

    async def _due(self, partition: int, state: PartitionState) -> list[PendingConversion]:
        """Select pending conversions that may be attributed now.

        A conversion is due once the partition's touchpoints have moved past
        its event time plus the settle delay. Otherwise, once it waited the
        settle delay in wall time, it is due only if this worker has applied
        every touchpoint the broker holds for the partition, so a backlog of
        touchpoints is never skipped.
        """
        now_s = time.monotonic()
        settle_s = self.settings.conversion_settle_s
        due = []
        waiting = []
        for pending in state.pending.values():
            if pending.time_ms + self.settle_ms <= state.watermark_ms:
                due.append(pending)
            elif now_s - pending.arrived_s >= settle_s:
                waiting.append(pending)
        if waiting and await self._touchpoints_caught_up(partition, state, now_s):
            due.extend(waiting)
        return due

    async def _touchpoints_caught_up(self, partition: int, state: PartitionState, now_s: float) -> bool:
        if now_s - state.last_touch_arrival_s < self.settings.conversion_settle_s:
            return False  # touchpoints are still arriving
        if self.touch_end_offset is None:
            return True
        end_offset = await self.touch_end_offset(partition)
        if end_offset is None:
            return False
        applied = state.offsets.get(self.settings.topic_touchpoints, -1)
        return applied + 1 >= end_offset

    async def _release(self, partition: int, state: PartitionState) -> None:
        due = await self._due(partition, state)
        if not due:
            return
        due, folded = self._merge_coupon_redemptions(due, state)
        if not due and not folded:
            return
        lookback_ms = max(self.params.lookback_click_ms, self.params.lookback_view_ms)

        pipe = self.store.client.pipeline(transaction=False)
        for pending in due:
            pipe.zrangebyscore(
                self.keys.touchpoints(partition, pending.person_id),
                pending.time_ms - lookback_ms, pending.time_ms, withscores=True,
            )
        codes = sorted({pending.coupon_code for pending in due if pending.coupon_code})
        if codes:
            pipe.hmget(self.keys.coupons(), codes)
        results = await pipe.execute()
        coupon_campaigns: dict[str, str] = {}
        if codes:
            for code, campaign in zip(codes, results.pop()):
                if campaign is not None:
                    coupon_campaigns[code] = campaign.decode()

        outgoing: list[Outgoing] = []
        unattributed = 0
        for pending, raw_touches in zip(due, results):
            touches = [decode_touch(member, score) for member, score in raw_touches]
            messages = self._attribute(pending, touches, coupon_campaigns)
            if len(messages) == 1:
                unattributed += 1
            outgoing.extend(messages)
        await self.send(outgoing)

        removed = await self._remove_pending(
            keys=[self.keys.pending(partition)], args=[pending.member for pending in due] + folded
        )
        pipe = self.store.client.pipeline(transaction=False)
        pipe.hincrby(self.keys.person_stats(partition), "conversions_attributed", len(due) - unattributed)
        pipe.hincrby(self.keys.person_stats(partition), "conversions_unattributed", unattributed)
        await pipe.execute()
        for member in [pending.member for pending in due] + folded:
            state.pending.pop(member, None)
        self.stats["conversions_attributed"] += len(due) - unattributed
        self.stats["conversions_unattributed"] += unattributed
        if removed != len(due) + len(folded):
            log.warning(
                "person partition=%d: %d of %d released conversions were already removed by another worker",
                partition, len(due) + len(folded) - int(removed), len(due) + len(folded),
            )

    def _merge_coupon_redemptions(
        self, due: list[PendingConversion], state: PartitionState
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

    def _attribute(
        self,
        pending: PendingConversion,
        touches: list[StoredTouch],
        coupon_campaigns: dict[str, str],
    ) -> list[Outgoing]:
        settings = self.settings
        eligible = eligible_touches(touches, pending.time_ms, self.params)
        coupon_campaign = coupon_campaigns.get(pending.coupon_code) if pending.coupon_code else None
        if coupon_campaign is not None:
            basis = "coupon"
            models = credit_coupon(coupon_campaign)
        elif eligible:
            basis = "touchpoints"
            models = credit_all_models(eligible, pending.time_ms, self.params)
        else:
            basis = "unattributed"
            models = {}

        event_time = iso_ms(pending.time_ms)
        credits_by_model: dict[str, list[dict[str, str]]] = {}
        per_campaign: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: {"weights": {}, "revenue": {}})
        for model, weights in models.items():
            shares = revenue_shares(weights, pending.amount)
            credits_by_model[model] = [
                {"campaign_id": campaign_id, "weight": decimal_text(weight), "revenue": decimal_text(shares[campaign_id])}
                for campaign_id, weight in sorted(weights.items())
            ]
            for campaign_id, weight in weights.items():
                per_campaign[campaign_id]["weights"][model] = decimal_text(weight)
                per_campaign[campaign_id]["revenue"][model] = decimal_text(shares[campaign_id])

        attribution = {
            "type": "attribution",
            "conversion_id": pending.conversion_id,
            "conversion_type": pending.conversion_type,
            "person_id": pending.person_id,
            "order_id": pending.order_id,
            "event_time": event_time,
            "revenue": format(pending.amount, "f"),
            "currency": pending.currency,
            "default_model": DEFAULT_MODEL,
            "basis": basis,
            "credits": credits_by_model,
            "touchpoints": [
                {
                    "event_id": touch.event_id,
                    "campaign_id": touch.campaign_id,
                    "touch_class": touch.touch_class,
                    "event_time": iso_ms(touch.time_ms),
                }
                for touch in eligible
            ],
        }
        messages = [Outgoing(settings.topic_attributions, pending.person_id, attribution)]
        for campaign_id, figures in sorted(per_campaign.items()):
            credit: dict[str, Any] = {
                "type": "credit",
                "credit_id": f"{pending.conversion_id}:{campaign_id}",
                "conversion_id": pending.conversion_id,
                "campaign_id": campaign_id,
                "event_time": event_time,
                "weights": figures["weights"],
                "revenue": figures["revenue"],
            }
            messages.append(Outgoing(settings.topic_credits, campaign_id, credit))
        return messages
