"""Attribution: store touchpoints per person and credit conversions to campaigns.

``AttributionProcessor`` consumes the co-partitioned ``touchpoints`` and
``conversions`` topics. For each batch and partition it

1. skips messages at or below the offsets already applied in Redis,
2. decodes and validates each event, protects personal data, drops events
   without consent, and rejects events that are late or dated in the future,
3. drops repeated events (a touchpoint already stored, a conversion whose
   event id or order id was seen within the deduplication horizon),
4. flags bot touchpoints and click floods, which are counted, not stored;
   steps 3 and 4 read Redis in one script call (streams.probe),
5. sends rejected events to the dead-letter topic, then writes touchpoints,
   identity links and pending conversions to Redis in one fenced script call,
   together with the offsets they came from,
6. releases conversions whose settle delay has passed. It reads the person's
   touchpoints and those of anonymous ids linked to the person, credits
   campaigns under every model, and sends the Attribution and one credit per
   campaign. Only then does it remove them from the pending set, so a crash
   before that removal re-sends the same credits, which the ROI processor
   drops by credit id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Awaitable, Callable, Iterator, Sequence

import orjson

from roitrack.attribution import AttributionParams
from roitrack.settings import Settings
from roitrack.topics import input_topic
from schemas.common import StrictModel, epoch_ms
from schemas.decode import Rejected, decode_message, future_time_error, future_time_limit_ms
from schemas.events import CheckIn, Click, CouponRedemption, Identify, Purchase, SocialTouch
from schemas.outputs import FieldError
from schemas.privacy import protect
from streams.crediting import (
    PendingConversion,
    attribute,
    decode_pending,
    decode_touch,
    encode_pending,
    encode_touch,
    pack_credits,
)
from streams.quality import FloodCheck, is_bot
from streams.probe import Probe, ProbeRequest, ProbeResult
from streams.progress import ProgressReporter, SourceProgress, partition_progress
from streams.records import (
    WRONG_PARTITION_FIELD, Outgoing, Record, Send, dead_letter, rejected_dead_letter, split_by_bytes,
)
from streams.referrals import PersonSocial, QueuedReferral, ReferralDecisions
from streams.release import Releaser
from streams.state import (
    FencedBatch,
    Rewind,
    Round,
    StaleBatch,
    StateRolledBack,
    StateStore,
    offset_gap_topics,
    partition_for_key,
    raise_first,
    rewind_to_stored,
)

# Re-exported for callers and tests that encode touchpoints.
__all__ = ["AttributionProcessor", "PendingConversion", "decode_touch", "encode_touch"]

log = logging.getLogger(__name__)

#: Message bytes classified ahead between two pauses (about 2 ms of work): a pause lets
#: the event loop send the rest of a large Redis request and read replies.
CLASSIFY_SLICE_BYTES = 64 * 1024

WATERMARK_FIELD = "_watermark_ms"
MAX_EVENT_FIELD = "_max_event_ms"

# Finishes a release in one atomic call: removes the released conversions from
# the pending set (KEYS[1]), counts them in the stats hash (KEYS[2]) and indexes
# their attributions by order id (KEYS[3..]). Only conversions it removes are
# counted, so one released twice (by a worker that lost the partition, or after
# Redis lost writes) counts once. ARGV: member count m, then m pairs of (member,
# outcome) with outcome "attributed", "unattributed" or "folded" (a redemption
# merged into its purchase, not counted), the index TTL in ms, then one (field,
# value) pair per index key. Every key carries the partition's hash tag, so this
# works on a cluster too. Returns the number removed.
_RELEASE_LUA = """
local m = tonumber(ARGV[1])
local removed = 0
local counts = {}
for i = 2, 2 * m, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    removed = removed + 1
    local outcome = ARGV[i + 1]
    if outcome ~= 'folded' then
      counts[outcome] = (counts[outcome] or 0) + 1
    end
  end
end
for outcome, count in pairs(counts) do
  redis.call('HINCRBY', KEYS[2], 'conversions_' .. outcome, count)
end
local j = 2 * m + 2
local ttl_ms = ARGV[j]
j = j + 1
for k = 3, #KEYS do
  redis.call('HSET', KEYS[k], ARGV[j], ARGV[j + 1])
  redis.call('PEXPIRE', KEYS[k], ttl_ms)
  j = j + 2
end
return removed
"""


@dataclass(slots=True)
class PartitionState:
    """This worker's cached state of one person partition."""

    offsets: dict[str, int]
    watermark_ms: int
    max_event_ms: dict[str, int]  # per input topic: lateness is measured within one stream
    pending: dict[bytes, PendingConversion] = field(default_factory=dict)
    last_touch_arrival_s: float = 0.0
    # Per input topic: when the worker last applied a message of it (monotonic seconds).
    input_arrival_s: dict[str, float] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    continuity_checked: set[str] = field(default_factory=set)
    referrals: dict[bytes, QueuedReferral] = field(default_factory=dict)  # see streams.referrals


@dataclass(slots=True)
class TouchCandidate:
    event: Click | SocialTouch | CheckIn
    key: str
    member: str
    time_ms: int
    touch_class: str
    record: Record | None = None


def _discard(task: "asyncio.Task[Any]") -> None:
    """Cancel the task of the run ahead, or take its error, so asyncio does not log it as never retrieved.

    An error there is not lost: the run it was for classifies and probes again and raises it again.
    """
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


@dataclass(slots=True)
class _Ahead:
    """The next partition run, classified and probed while this worker waited for Redis."""

    partition: int
    records: Sequence[Record]
    task: "asyncio.Task[tuple[PartitionState, FencedBatch, BatchPlan, ProbeResult]]"


@dataclass(slots=True)
class BatchPlan:
    """The writes planned for one partition's batch, built before anything is written."""

    dead: list[Outgoing] = field(default_factory=list)
    touches: list[TouchCandidate] = field(default_factory=list)
    conversions: list[tuple[Purchase | CouponRedemption, Record]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (user id, anonymous id)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_event_ms: dict[str, int] = field(default_factory=dict)
    # Input topics with at least one event inside the time limits: only these count as arrivals.
    timed_topics: set[str] = field(default_factory=set)
    # Per input topic, for the metrics: messages and events read, repeats dropped.
    messages_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    event_index: int | None = None  # position of the event being classified inside a batch message
    # Events that streams.referrals needs and that are not stored as touchpoints:
    # engagements of kinds attribution ignores, and sign-ups with a referral code.
    social: list[tuple[SocialTouch | Identify, Record]] = field(default_factory=list)


class AttributionProcessor:
    """Stores touchpoints and attributes conversions; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        send: Send,
        end_offset: Callable[[str, int], Awaitable[int | None]] | None = None,
        rewind: Rewind | None = None,
        fetched_end_offset: Callable[[str, int], int | None] | None = None,
    ) -> None:
        """``end_offset(topic, partition)`` returns the broker's end offset of one
        input partition, or None when unknown. ``fetched_end_offset`` returns the
        end offset seen in the consumer's latest fetch, without a broker request.
        ``rewind`` schedules messages to be read again when Redis is missing them
        (see streams.state)."""
        self.settings = settings
        self.rewind = rewind
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
        self.partitions: dict[int, PartitionState] = {}
        self._ahead: _Ahead | None = None
        self._releasing: list[tuple[int, asyncio.Future[None]]] = []  # (partition, release task), see _settle
        self._finish_release = store.client.register_script(_RELEASE_LUA)
        self.metrics = store.metrics
        self.stats: dict[str, int] = defaultdict(int)
        self.flood = FloodCheck(settings, store)
        self.probe = Probe(store, self.flood.window_ms, self.flood.max_clicks)
        self.releaser = Releaser(self, end_offset)
        self.fetched_end_offset = fetched_end_offset
        self.progress = ProgressReporter(
            settings.topic_credits, settings.campaign_partitions, settings.progress_interval_s, send,
        )
        self.social = PersonSocial(settings, store, send, self.releaser)
        if not settings.pii_salt:
            log.warning(
                "ROITRACK_PII_SALT is empty: e-mail and phone hashes are unsalted and can be "
                "reversed with a dictionary; set a secret salt in production"
            )

    # --- partition lifecycle --------------------------------------------

    async def _partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            offsets_key = self.keys.offsets(self.keys.person_tag(partition))
            with self.metrics.redis("partition_load"):
                offsets = await self.store.load_offsets(offsets_key)
            watermark_ms = offsets.pop(WATERMARK_FIELD, 0)
            max_event_ms = {
                name[len(MAX_EVENT_FIELD) + 1:]: offsets.pop(name)
                for name in [name for name in offsets if name.startswith(MAX_EVENT_FIELD + ":")]
            }
            now_s = time.monotonic()
            # Until the first fetch, the touchpoints are not known to be quiet, so
            # the idle release waits its full time from the load.
            state = PartitionState(
                offsets=offsets, watermark_ms=watermark_ms, max_event_ms=max_event_ms,
                last_touch_arrival_s=now_s,
                input_arrival_s={self.settings.topic_touchpoints: now_s, self.settings.topic_conversions: now_s},
            )
            with self.metrics.redis("partition_load"):
                members: list[bytes] = await self.store.client.zrange(self.keys.pending(partition), 0, -1)  # type: ignore[assignment]  # the client returns bytes (decode_responses=False)
            for member in members:
                state.pending[member] = decode_pending(member, now_s)
            await self.social.load(partition, state)
            self.partitions[partition] = state
            log.info(
                "loaded person partition=%d offsets=%s pending=%d watermark_ms=%d",
                partition, offsets, len(state.pending), watermark_ms,
                extra={"partition": partition, "pending": len(state.pending), "watermark_ms": watermark_ms},
            )
        return state

    async def load(self, partition: int) -> None:
        """Load a partition's state from Redis unless it is loaded already."""
        await self._partition(partition)

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop cached state of partitions this worker no longer owns."""
        for partition in partitions:
            self.partitions.pop(partition, None)
            self.progress.forget(partition)

    # --- ingest ----------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> None:
        """Handle one batch of records from the touchpoints and conversions topics.

        Partitions run one after the other, in partition order. They share
        untagged Redis keys (the first share of a referral code registers it),
        so running them concurrently would make a same-batch result depend on
        timing. A partition's records are applied in runs of at most
        ``ROITRACK_BATCH_MAX_PARTITION_BYTES``, in batch order.
        """
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        ordered = [(partition, split_by_bytes(partition_records, self.settings.batch_max_partition_bytes))
                   for partition, partition_records in sorted(by_partition.items())]
        completed = False
        try:
            for position, (partition, runs) in enumerate(ordered):
                following = ordered[position + 1] if position + 1 < len(ordered) else None
                for number, run in enumerate(runs):
                    # A later run of the same partition depends on this one, so only
                    # the next partition's first run is classified ahead.
                    ahead = None
                    if number == len(runs) - 1 and following is not None:
                        ahead = (following[0], following[1][0])
                    if not await self._process_partition(partition, run, ahead):
                        break  # the partition reloads or reads again first, so its later runs come again
            completed = True
        finally:
            self._drop_ahead()
            error = await self._finish_releases(completed)
        if error is not None:
            raise error

    async def _finish_releases(self, completed: bool) -> BaseException | None:
        """Wait for the releases that ``_settle`` finishes in tasks; return the first error.

        A batch ends only when all of them are written, so the worker commits no
        offset before the credits of its batch are acknowledged. When the batch
        failed already, its own error is raised, and these are logged.
        """
        releasing, self._releasing = self._releasing, []
        if not releasing:
            return None
        results = await asyncio.gather(*(task for _, task in releasing), return_exceptions=True)
        errors = [(partition, result) for (partition, _), result in zip(releasing, results)
                  if isinstance(result, BaseException)]
        if not errors:
            return None
        if completed:
            return errors[0][1]
        for partition, error in errors:
            log.error(
                "person partition=%d: release of the failed batch also failed: %r (the partition reloads from Redis)",
                partition, error, extra={"partition": partition},
            )
        return None

    async def _process_partition(
        self, partition: int, records: Sequence[Record], ahead: tuple[int, Sequence[Record]] | None = None,
    ) -> bool:
        """Apply one run of a partition's records; return False when it was not applied.

        ``ahead`` is the next partition's run, which ``_ingest`` classifies while
        it waits for this run's fenced write.
        """
        state = await self._partition(partition)
        await state.lock.acquire()
        if self.partitions.get(partition) is not state:
            # Dropped while this run waited for the lock: a release task of the run
            # before it failed (and fails the batch), or a rebalance revoked the partition.
            state.lock.release()
            return False
        handed_over = False
        try:
            if offset_gap_topics("person", partition, records, state.offsets, state.continuity_checked):
                await self._read_again(partition)
                return False
            if not await self._ingest(partition, state, records, ahead):
                return False  # the cached state was dropped; the next batch reloads it
            handed_over = await self._settle(partition, state, in_task=True)
            return True
        except BaseException:
            # Reload from Redis on the next batch rather than trust a half-updated cache.
            self.partitions.pop(partition, None)
            raise
        finally:
            if not handed_over:
                state.lock.release()

    async def _read_again(self, partition: int) -> None:
        """Read the partition's topics again from the offsets stored in Redis."""
        topics = (self.settings.topic_touchpoints, self.settings.topic_conversions)
        await rewind_to_stored(self.store, self.keys.offsets(self.keys.person_tag(partition)), partition, topics, self.rewind)

    def _reject(self, plan: BatchPlan, record: Record, reason: str, problem: FieldError, step: str, event: StrictModel) -> None:
        plan.dead.append(dead_letter(
            self.settings.topic_dead_letters, record, reason, [problem], step,
            self.settings.dead_letter_payload_max_bytes,
            raw=orjson.dumps(event.model_dump(mode="json", exclude_none=True)),
            event_index=plan.event_index,
        ))

    def _classify_ahead(self, partition: int, records: Sequence[Record]) -> None:
        """Classify and probe a later partition run in a task, which runs while this one waits for Redis.

        Classifying reads only the partition's offsets and latest event times,
        and the probe reads its touchpoint keys and seen ids. Only the
        partition's own run changes them, and it comes after this one, so the
        plan and the probe stay valid until then; the release timer writes none
        of them. A partition that is not loaded yet, or that the release timer
        holds, is classified when its run comes.
        """
        self._drop_ahead()
        state = self.partitions.get(partition)
        if state is None or state.lock.locked():
            return

        async def classify() -> tuple[PartitionState, FencedBatch, BatchPlan, ProbeResult]:
            batch = FencedBatch(self.keys.offsets(self.keys.person_tag(partition)))
            plan = BatchPlan(max_event_ms=dict(state.max_event_ms))
            # Each pause lets the event loop finish sending this run's write, and read its reply.
            for _ in self._classifying(plan, partition, state, records, batch):
                await asyncio.sleep(0)
            return state, batch, plan, await self._run_probe(partition, plan)

        self._ahead = _Ahead(partition, records, asyncio.ensure_future(classify()))

    async def _run_probe(self, partition: int, plan: BatchPlan) -> ProbeResult:
        with self.metrics.redis("ingest_read"):
            return await self.probe.run(self._probe_request(plan), self.keys.seen_events(partition))

    async def _planned(
        self, partition: int, state: PartitionState, records: Sequence[Record],
    ) -> tuple[FencedBatch, BatchPlan, ProbeResult]:
        """Return the run's fenced batch, plan and probe: those made ahead when still valid, else new ones."""
        ahead = self._ahead
        self._ahead = None
        if ahead is not None:
            task = ahead.task
            if ahead.partition == partition and ahead.records is records:
                if not task.done():
                    try:
                        await asyncio.wait((task,))
                    except BaseException:
                        _discard(task)
                        raise
                if not task.cancelled() and task.exception() is None:
                    classified_state, batch, plan, probe = task.result()
                    if classified_state is state:
                        return batch, plan, probe
            _discard(task)
        batch = FencedBatch(self.keys.offsets(self.keys.person_tag(partition)))
        plan = self._classify(partition, state, records, batch)
        return batch, plan, await self._run_probe(partition, plan)

    def _drop_ahead(self) -> None:
        ahead = self._ahead
        self._ahead = None
        if ahead is not None:
            _discard(ahead.task)

    def _classify(self, partition: int, state: PartitionState, records: Sequence[Record], batch: FencedBatch) -> BatchPlan:
        """Decode, validate and sort a partition's records into a plan; writes nothing."""
        plan = BatchPlan(max_event_ms=dict(state.max_event_ms))
        for _ in self._classifying(plan, partition, state, records, batch):
            pass
        return plan

    def _classifying(
        self, plan: BatchPlan, partition: int, state: PartitionState, records: Sequence[Record], batch: FencedBatch,
    ) -> Iterator[None]:
        """Classify the records into ``plan``, pausing after about every ``CLASSIFY_SLICE_BYTES`` of values."""
        settings = self.settings
        wall_ms = int(time.time() * 1000)
        future_limit_ms = future_time_limit_ms(wall_ms, settings.max_future_skew_s)
        unpaused = 0
        for record in records:
            if unpaused >= CLASSIFY_SLICE_BYTES:
                unpaused = 0
                yield
            unpaused += len(record.value or b"")
            if record.offset <= state.offsets.get(record.topic, -1):
                continue  # applied before a restart or a rebalance
            batch.cover(record.topic, record.offset, record.offset, state.offsets.get(record.topic, -1))
            items = decode_message(record.value)
            is_batch = (record.value or b"").lstrip()[:1] == b"["
            plan.messages_in[record.topic] += 1
            plan.events_in[record.topic] += len(items)
            for index, item in enumerate(items):
                plan.event_index = index if is_batch else None
                if isinstance(item, Rejected):
                    plan.dead.append(rejected_dead_letter(
                        settings.topic_dead_letters, record, item, "attribution.decode",
                        settings.dead_letter_payload_max_bytes,
                    ))
                    continue
                if isinstance(item, (Click, SocialTouch, CheckIn, Identify, Purchase, CouponRedemption)):
                    self._classify_person_event(plan, partition, record, item, wall_ms, future_limit_ms)
                    continue
                event_type = getattr(item, "type", None)
                target = input_topic(settings, event_type) if isinstance(event_type, str) else None
                self._reject(plan, record, "unsupported", FieldError(
                    field="type", value=event_type,
                    reason=f"event type does not belong on topic {record.topic}; send it to {target or 'its own topic'}",
                ), "attribution.route", item)

    def _classify_person_event(
        self,
        plan: BatchPlan,
        partition: int,
        record: Record,
        raw_event: Click | SocialTouch | CheckIn | Identify | Purchase | CouponRedemption,
        wall_ms: int,
        future_limit_ms: int,
    ) -> None:
        settings = self.settings
        if raw_event.consent is False:
            plan.counts["consent_dropped"] += 1
            return
        event = protect(raw_event, settings.pii_salt)
        time_ms = epoch_ms(event.event_time)
        if time_ms > future_limit_ms:
            error = future_time_error(event.event_time, settings.max_future_skew_s, "worker")
            self._reject(plan, record, "invalid", error, "attribution.time", event)
            return
        latest_ms = plan.max_event_ms.get(record.topic, 0)
        if latest_ms and time_ms < latest_ms - settings.allowed_lateness_s * 1000:
            self._reject(plan, record, "late", FieldError(
                field="event_time", value=event.event_time.isoformat(),
                reason=(f"is more than {settings.allowed_lateness_s} s behind the partition's latest event; "
                        "raise ROITRACK_ALLOWED_LATENESS_S to accept it"),
            ), "attribution.time", event)
            return
        plan.max_event_ms[record.topic] = max(latest_ms, min(time_ms, wall_ms))
        plan.timed_topics.add(record.topic)

        expected_topic = settings.topic_conversions if isinstance(event, (Purchase, CouponRedemption)) else settings.topic_touchpoints
        if record.topic != expected_topic:
            self._reject(plan, record, "unsupported", FieldError(
                field="type", value=event.type,
                reason=f"event type does not belong on topic {record.topic}; send it to {expected_topic}",
            ), "attribution.route", event)
            return

        expected_partition = partition_for_key(event.person_id.encode(), settings.person_partitions)
        if expected_partition != partition:
            # The person's other events, and lookups by person, go to the murmur2 partition.
            self._reject(plan, record, "unsupported", FieldError(
                field=WRONG_PARTITION_FIELD, value=event.person_id,
                reason=(f"the person id belongs on partition {expected_partition} under Kafka's default "
                        f"murmur2 partitioner, but the event arrived on partition {partition}; produce it "
                        "keyed by user_id (else anonymous_id) with the default partitioner"),
            ), "attribution.route", event)
            return

        if isinstance(event, Identify):
            plan.links.append((event.user_id, event.anonymous_id))  # type: ignore[arg-type]  # Identify requires both ids
            if event.referral_code is not None:
                plan.social.append((event, record))
            return
        if isinstance(event, (Purchase, CouponRedemption)):
            problem = self._conversion_problem(event)
            if problem is not None:
                self._reject(plan, record, "unsupported", problem, "attribution.convert", event)
                return
            if event.user_id is not None and event.anonymous_id is not None:
                plan.links.append((event.user_id, event.anonymous_id))
            plan.conversions.append((event, record))
            return
        touch = self._touch_member(event)
        if touch is None:
            plan.counts["touchpoints_ignored"] += 1
            if isinstance(event, SocialTouch) and not is_bot(event.user_agent, settings.bot_user_agent_patterns):
                plan.social.append((event, record))  # still an engagement of its campaign
            return
        member, touch_class = touch
        if is_bot(event.user_agent, settings.bot_user_agent_patterns):
            plan.counts["touchpoints_bot"] += 1
            return
        plan.touches.append(TouchCandidate(
            event, self.keys.touchpoints(partition, event.person_id), member, time_ms, touch_class, record,
        ))

    def _probe_request(self, plan: BatchPlan) -> ProbeRequest:
        """Ask which touchpoints and conversion ids are stored, and the clicks of each flood window."""
        request = ProbeRequest(windows=self.flood.windows(plan.touches))
        add_touch = request.add_touch
        for candidate in plan.touches:
            add_touch(candidate.key, candidate.member)
        for event, _ in plan.conversions:
            request.seen_ids.append(f"e:{event.event_id}")
            if event.order_id is not None:
                request.seen_ids.append(f"o:{event.type}:{event.order_id}")
        return request

    def _drop_repeats(self, plan: BatchPlan, probe: ProbeResult) -> list[PendingConversion]:
        """Remove touchpoints already stored and conversions already seen; return new pending conversions."""
        fresh_touches: list[TouchCandidate] = []
        batch_members: set[tuple[str, str]] = set()
        duplicates = 0
        for candidate, stored in zip(plan.touches, probe.stored):
            key = candidate.key
            if stored == 49 or (key, candidate.member) in batch_members:  # 49: b"1", stored already
                duplicates += 1
                continue
            batch_members.add((key, candidate.member))
            fresh_touches.append(candidate)
        plan.touches = fresh_touches
        plan.counts["duplicates"] += duplicates
        plan.duplicates_in[self.settings.topic_touchpoints] += duplicates

        seen = probe.seen
        now_s = time.monotonic()
        fresh: list[PendingConversion] = []
        for event, _ in plan.conversions:
            ids = [f"e:{event.event_id}"] + ([f"o:{event.type}:{event.order_id}"] if event.order_id else [])
            if any(seen_id in seen for seen_id in ids):
                plan.counts["duplicates"] += 1
                plan.duplicates_in[self.settings.topic_conversions] += 1
                continue
            seen.update(ids)
            fresh.append(self._pending(event, now_s))
        return fresh

    async def _ingest(
        self, partition: int, state: PartitionState, records: Sequence[Record],
        ahead: tuple[int, Sequence[Record]] | None = None,
    ) -> bool:
        """Apply a partition's records; return False when Redis rejected the batch and the state was dropped."""
        settings = self.settings
        batch, plan, probe = await self._planned(partition, state, records)
        new_pending = self._drop_repeats(plan, probe)
        with self.metrics.redis("flood_check"):
            plan.touches, flooded = await self.flood.filter(plan.touches, probe.window_clicks)
        plan.counts["clicks_flood"] += flooded
        social = await self.social.prepare(partition, plan, new_pending)
        new_pending = social.pending
        plan.dead.extend(social.dead)
        for name, value in social.counts.items():
            plan.counts[name] += value
        # Facts are dropped by id downstream, so sending them again after a crash is harmless.
        await self.send(social.facts)

        if plan.dead:
            # Dead letters go out before the offsets move, so a crash cannot lose them.
            await self.send(plan.dead)
            log.warning(
                "sent %d dead letter(s) from person partition=%d", len(plan.dead), partition,
                extra={"partition": partition, "dead_letters": len(plan.dead)},
            )

        watermark_ms = state.watermark_ms
        wall_ms = int(time.time() * 1000)
        touches_by_key: dict[str, list[str | int]] = defaultdict(list)
        for candidate in plan.touches:
            touches_by_key[candidate.key].extend((candidate.time_ms, candidate.member))
            watermark_ms = max(watermark_ms, min(candidate.time_ms, wall_ms))
        ttl_ms = settings.touchpoint_ttl_s * 1000
        batch.zadd_capped(touches_by_key, settings.max_touchpoints_per_person, watermark_ms - ttl_ms, ttl_ms)
        for user_id, anonymous_id in plan.links:
            alias_key = self.keys.aliases(partition, user_id)
            batch.command("SADD", alias_key, anonymous_id)
            batch.command("PEXPIRE", alias_key, ttl_ms)
        if new_pending:
            pairs_pending: list[str | int | bytes] = []
            seen_pairs: list[str | int] = []
            for pending in new_pending:
                pairs_pending.extend((pending.time_ms, pending.member))
                seen_pairs.extend((wall_ms, f"e:{pending.conversion_id}"))
                if pending.order_id is not None:
                    seen_pairs.extend((wall_ms, f"o:{pending.conversion_type}:{pending.order_id}"))
            batch.command_many("ZADD", self.keys.pending(partition), pairs_pending, group=2)
            seen_key = self.keys.seen_events(partition)
            batch.command_many("ZADD", seen_key, seen_pairs, group=2)
            batch.command("ZREMRANGEBYSCORE", seen_key, "-inf", f"({wall_ms - settings.dedup_horizon_s * 1000}")

        stats_key = self.keys.person_stats(partition)
        counts = dict(plan.counts)
        counts["touchpoints"] = len(plan.touches)
        counts["conversions_received"] = len(new_pending)
        counts["identity_links"] = len(plan.links)
        counts["dead_letters"] = len(plan.dead)
        for name, value in sorted(counts.items()):
            if value:
                batch.command("HINCRBY", stats_key, name, value)
        self.social.write(batch, partition, social)
        if watermark_ms != state.watermark_ms:
            batch.command("HSET", batch.offsets_key, WATERMARK_FIELD, watermark_ms)
        for topic, latest_ms in plan.max_event_ms.items():
            if latest_ms != state.max_event_ms.get(topic):
                batch.command("HSET", batch.offsets_key, f"{MAX_EVENT_FIELD}:{topic}", latest_ms)

        if ahead is not None:
            self._classify_ahead(*ahead)
        try:
            await self.store.apply(batch)
        except StaleBatch as exc:
            log.warning("person partition=%d: %s", partition, exc)
            self.partitions.pop(partition, None)
            return False
        except StateRolledBack as exc:
            log.error("person partition=%d: %s", partition, exc)
            self.partitions.pop(partition, None)
            await self._read_again(partition)
            return False

        for topic, (_, last) in batch.offset_ranges.items():
            state.offsets[topic] = last
        state.watermark_ms = watermark_ms
        state.max_event_ms = plan.max_event_ms
        arrived_s = time.monotonic()
        # A topic that delivered only rejected or dropped messages did not move its event
        # time, so it must not count as active and hold the deal clock back.
        for topic in plan.timed_topics:
            state.input_arrival_s[topic] = arrived_s
        if plan.touches:
            state.last_touch_arrival_s = arrived_s
        for pending in new_pending:
            state.pending[pending.member] = pending
        self.social.applied(state, social)
        for name, value in counts.items():
            self.stats[name] += value
        self._count_batch(plan, counts)
        return True

    def _count_batch(self, plan: BatchPlan, counts: dict[str, int]) -> None:
        """Add an applied batch to the Prometheus counters."""
        metrics = self.metrics
        for topic, value in plan.messages_in.items():
            metrics.messages_in.labels(topic).inc(value)
        for topic, value in plan.events_in.items():
            metrics.events_in.labels(topic).inc(value)
        for topic, value in plan.duplicates_in.items():
            metrics.duplicates.labels(topic).inc(value)
        for name, value in counts.items():
            if value:
                metrics.attribution_events.labels(name).inc(value)

    def _touch_member(self, event: Click | SocialTouch | CheckIn) -> tuple[str, str] | None:
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
        return encode_touch(event.event_id, event.campaign_id, touch_class), touch_class  # type: ignore[arg-type]  # campaign_id is set on every branch that reaches here

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
        data = {
            "id": event.event_id,
            "type": event.type,
            "person": event.person_id,
            "anon": event.anonymous_id if event.user_id is not None else None,
            "order": event.order_id,
            "amount": format(amount, "f"),
            "currency": self.settings.reporting_currency,
            "coupon": event.coupon_code,
            "t": epoch_ms(event.event_time),
        }
        if isinstance(event, Purchase) and event.deal_id is not None:
            data["deal"] = event.deal_id
        if isinstance(event, Purchase) and event.referral_code is not None:
            data["ref"] = event.referral_code
        return decode_pending(encode_pending(data), now_s)

    # --- release ---------------------------------------------------------

    async def release_due(self) -> None:
        """Attribute every conversion whose settle delay has passed, on every owned partition.

        Then report each partition's progress to the campaign partitions (see
        streams.progress), after the credits it released.
        """
        for partition, state in list(self.partitions.items()):
            if state.lock.locked():
                continue
            async with state.lock:
                try:
                    if state.pending or state.referrals:
                        await self._settle(partition, state)
                    now_s = time.monotonic()
                    if self.progress.due(partition, now_s):
                        await self.progress.report(partition, self._progress(partition, state, now_s), now_s)
                except BaseException:
                    self.partitions.pop(partition, None)
                    raise

    def _progress(self, partition: int, state: PartitionState, now_s: float) -> SourceProgress:
        """Return the event time up to which this partition has credited every deal purchase it read.

        A topic is active while the consumer's latest fetch left a backlog on it,
        or while a message of it arrived within the idle-release time; see
        streams.progress for the rule.
        """
        topics = (self.settings.topic_touchpoints, self.settings.topic_conversions)
        reached = {topic: state.max_event_ms.get(topic, 0) for topic in topics}
        idle_s = self.settings.conversion_idle_release_s
        active = [
            topic for topic in topics
            if self._has_backlog(topic, partition, state) or now_s - state.input_arrival_s.get(topic, 0.0) < idle_s
        ]
        deal_times = [pending.time_ms for pending in state.pending.values() if pending.deal_id is not None]
        return partition_progress(reached, active, deal_times)

    def _has_backlog(self, topic: str, partition: int, state: PartitionState) -> bool:
        """Return True when the latest fetch ended beyond the applied offset, or nothing was fetched yet.

        It reads the end offset of the consumer's latest fetch, which costs no
        broker request, unlike ListOffsets.
        """
        if self.fetched_end_offset is None:
            return False
        end_offset = self.fetched_end_offset(topic, partition)
        return end_offset is None or state.offsets.get(topic, -1) + 1 < end_offset

    async def _settle(self, partition: int, state: PartitionState, in_task: bool = False) -> bool:
        """Release the due conversions and decide the due referrals of one partition.

        Both read in one Redis round and write in one more: the conversions'
        coupons and touchpoints with the referrals' code owners and persons, then
        the script that removes the released conversions with the one that
        removes the decided referrals. Their keys do not overlap. The credits,
        facts and dead letters are sent, and acknowledged, between the two rounds.

        After the reads, both scripts write only this partition's keys: the
        conversions' pending set and order index, and the referral queue, stats
        and persons' referral hashes. With ``in_task``, the send and the write
        therefore run in a task that holds the partition's lock and releases it,
        while the batch goes on with the next partition; ``process`` waits for
        the task before the batch ends. Return True when such a task took the lock.
        """
        due = await self.releaser.due(partition, state)
        folded: list[bytes] = []
        if due:
            due, folded = self.releaser.merge_coupon_redemptions(due, state)
        referrals = await self.social.due_referrals(partition, state)
        if not due and not folded and referrals is None:
            return False

        reads = Round(self.store.client)
        codes = sorted({pending.coupon_code for pending in due if pending.coupon_code})
        coupons_index = reads.command("HMGET", self.keys.coupons(), *codes) if codes else None
        touch_indexes = [reads.script(self.releaser._read_touches, keys, args)
                         for keys, args in self.releaser.touch_reads(partition, due)]
        if referrals is not None:
            self.social.add_reads(reads, referrals)
        with self.metrics.redis("release_read"):
            replies = await reads.execute()
            touches = await self.releaser.gather_touches(due, [replies[index] for index in touch_indexes])
        coupon_campaigns: dict[str, str] = {}
        if coupons_index is not None:
            for code, campaign in zip(codes, replies[coupons_index]):
                if campaign is not None:
                    coupon_campaigns[code] = campaign.decode() if isinstance(campaign, bytes) else str(campaign)

        outgoing: list[Outgoing] = []
        index: list[tuple[str, str, bytes]] = []  # (key, conversion id, Attribution JSON)
        unattributed = 0
        outcomes: list[bytes | str] = []
        for pending, person_touches in zip(due, touches):
            coupon_campaign = coupon_campaigns.get(pending.coupon_code) if pending.coupon_code else None
            messages = attribute(self.settings, self.params, pending, person_touches, coupon_campaign)
            outcome = "unattributed" if len(messages) == 1 else "attributed"
            unattributed += outcome == "unattributed"
            outcomes.extend((pending.member, outcome))
            if pending.order_id is not None and self.settings.attribution_index_ttl_s:
                index.append((
                    self.keys.order_attributions(partition, pending.order_id),
                    pending.conversion_id,
                    orjson.dumps(messages[0].value),
                ))
            outgoing.extend(messages)
        for member in folded:
            outcomes.extend((member, "folded"))
        if referrals is not None:
            self.social.decide(referrals, replies)
        write = self._write_release(partition, state, due, folded, outgoing, outcomes, index, unattributed, referrals)
        if in_task:
            self._releasing.append((partition, asyncio.ensure_future(self._release_in_task(partition, state, write))))
            return True
        await write
        return False

    async def _release_in_task(self, partition: int, state: PartitionState, write: Awaitable[None]) -> None:
        """Finish a release in a task that holds the partition's lock, and release the lock."""
        try:
            await write
        except BaseException:
            if self.partitions.get(partition) is state:
                self.partitions.pop(partition, None)  # reload from Redis rather than trust a half-updated cache
            raise
        finally:
            state.lock.release()

    async def _write_release(
        self, partition: int, state: PartitionState, due: list[PendingConversion], folded: list[bytes],
        outgoing: list[Outgoing], outcomes: list[bytes | str], index: list[tuple[str, str, bytes]], unattributed: int,
        referrals: ReferralDecisions | None,
    ) -> None:
        """Send a release's credits and facts, wait for the broker, then write the release to Redis."""
        # Outputs first: a crash before the removals releases the conversions and
        # decides the referrals again, and their repeated credits and facts are
        # dropped by id downstream.
        await self.send(pack_credits(outgoing, self.settings.topic_credits) + (referrals.outputs if referrals else []))
        sent_s = time.monotonic()
        for pending in due:
            self.metrics.attribution_latency.observe(max(0.0, sent_s - pending.arrived_s))

        writes = Round(self.store.client)
        members = [pending.member for pending in due] + folded
        release_index = None
        if members:
            args: list[str | int | bytes] = [len(members), *outcomes, self.settings.attribution_index_ttl_s * 1000]
            for _, conversion_id, value in index:
                args.extend((conversion_id, value))
            keys = [self.keys.pending(partition), self.keys.person_stats(partition), *(key for key, _, _ in index)]
            release_index = writes.script(self._finish_release, keys, args)
        resolve_index = self.social.add_write(writes, referrals) if referrals is not None else None
        if not len(writes):
            return  # the due referrals all wait for their codes' shares
        with self.metrics.redis("release_write"):
            replies = await writes.execute(raise_on_error=False)
        # The two scripts are independent: record the one that ran before raising the other's error.
        if referrals is not None and resolve_index is not None and not isinstance(replies[resolve_index], Exception):
            self.social.finish(state, referrals, int(replies[resolve_index]))
        if release_index is not None and not isinstance(replies[release_index], Exception):
            self._released(partition, state, members, len(due) - unattributed, unattributed, int(replies[release_index]))
        raise_first(replies)

    def _released(
        self, partition: int, state: PartitionState, members: list[bytes], attributed: int, unattributed: int,
        removed: int,
    ) -> None:
        """Drop the released conversions from the cached state and count them."""
        for member in members:
            state.pending.pop(member, None)
        self.stats["conversions_attributed"] += attributed
        self.stats["conversions_unattributed"] += unattributed
        if attributed:
            self.metrics.attribution_events.labels("conversions_attributed").inc(attributed)
        if unattributed:
            self.metrics.attribution_events.labels("conversions_unattributed").inc(unattributed)
        if removed != len(members):
            log.warning(
                "person partition=%d: %d of %d released conversions were no longer pending (released by another worker, or lost by Redis); they are not counted again",
                partition, len(members) - int(removed), len(members),
            )
