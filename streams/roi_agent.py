"""ROI: roll credits and spend up per campaign and publish throttled RoiUpdates.

``RoiProcessor`` consumes the co-partitioned ``credits``, ``campaigns`` and
``spend`` topics. Each campaign partition has one writer, which keeps its
campaigns' aggregates in memory and computes them with ``Decimal``. It writes
the changed aggregates back whole in one fenced script call, together with the
partition offsets and the ids of the credits it applied. Repeated credits (the same
conversion and campaign) are dropped by id. Engagement and referral facts, deal
definitions, impressions and follower snapshots go to ``streams.social``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

import orjson

from roitrack.history import HistoryCredit, bucket_start_ms, decode_totals, encode_totals, history_increments
from roitrack.roi import (
    CampaignAggregate,
    CreditFigures,
    SpendRecord,
    roi_metrics,
    round_money,
    shared_bucket_ms,
    sum_by_span,
    window_label,
)
from roitrack.settings import Settings
from roitrack.social import SocialAggregate
from roitrack.topics import input_topic
from schemas.common import epoch_ms
from schemas.decode import Rejected, decode_message, describe_value, dumps_or_repr, future_time_limit_ms
from schemas.events import Campaign, Spend
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL, FieldError
from streams.credit_check import CheckedCredit, check_credit, check_credit_item, is_credit_batch
from streams.facts import is_fact_message
from streams.progress import (
    SourceProgress,
    deal_clock,
    decode_progress,
    encode_sources,
    is_progress_message,
    merge_progress,
    pop_sources,
)
from streams.records import (
    WRONG_PARTITION_FIELD, Outgoing, Record, Send, dead_letter, decimal_text, iso_ms, rejected_dead_letter,
    split_by_bytes, utc_now,
)
from streams.social import CampaignSocial, SocialBatch
from streams.state import (
    FencedBatch,
    Rewind,
    Round,
    StaleBatch,
    StateRolledBack,
    StateStore,
    offset_gap_topics,
    partition_for_key,
    rewind_to_stored,
)

log = logging.getLogger(__name__)

WATERMARK_FIELD = "_watermark_ms"


def _dead_reason(problem: FieldError) -> str:
    """Return the dead-letter reason of a rejected credit: unsupported on the wrong partition, else invalid."""
    return "unsupported" if problem.field == WRONG_PARTITION_FIELD else "invalid"


@dataclass(slots=True)
class CampaignPartition:
    """This worker's cached state of one campaign partition."""

    offsets: dict[str, int]
    watermark_ms: int
    campaigns: dict[str, CampaignAggregate] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    last_emit_s: dict[str, float] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    continuity_checked: set[str] = field(default_factory=set)
    social: dict[str, SocialAggregate] = field(default_factory=dict)  # see streams.social
    #: person partition -> its reported event-time progress (see streams.progress)
    sources: dict[int, SourceProgress] = field(default_factory=dict)


class RoiProcessor:
    """Aggregates per campaign and emits RoiUpdates; see the module docstring."""

    def __init__(self, settings: Settings, store: StateStore, send: Send, rewind: Rewind | None = None) -> None:
        self.settings = settings
        self.rewind = rewind
        self.store = store
        self.keys = store.keys
        self.send = send
        self.partitions: dict[int, CampaignPartition] = {}
        self.stats: dict[str, int] = defaultdict(int)
        self.metrics = store.metrics
        self.social = CampaignSocial(settings, store)
        #: Credits are summed over aligned spans of this length before they are added; see sum_by_span.
        self.span_ms = shared_bucket_ms(settings.roi_windows_s, settings.roi_history_bucket_s)

    async def _partition(self, partition: int) -> CampaignPartition:
        state = self.partitions.get(partition)
        if state is None:
            with self.metrics.redis("partition_load"):
                offsets = await self.store.load_offsets(self.keys.offsets(self.keys.campaign_tag(partition)))
            watermark_ms = offsets.pop(WATERMARK_FIELD, 0)
            sources = pop_sources(offsets)
            state = CampaignPartition(offsets=offsets, watermark_ms=watermark_ms, sources=sources)
            self.partitions[partition] = state
            # Publish every known campaign once after a (re)load, so an update
            # lost in a crash between the state write and the send is repeated.
            for member in await self.store.client.smembers(self.keys.campaign_index(partition)):
                campaign_id = member.decode() if isinstance(member, bytes) else str(member)
                await self._campaign(partition, state, campaign_id)
                await self.social.aggregate(partition, state, campaign_id)
                state.dirty.add(campaign_id)
            log.info(
                "loaded campaign partition=%d offsets=%s campaigns=%d",
                partition, offsets, len(state.campaigns),
                extra={"partition": partition, "campaigns": len(state.campaigns)},
            )
        return state

    async def load(self, partition: int) -> None:
        """Load a partition's campaigns from Redis unless they are loaded already."""
        await self._partition(partition)

    def forget(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    async def _campaign(self, partition: int, state: CampaignPartition, campaign_id: str) -> CampaignAggregate:
        aggregate = state.campaigns.get(campaign_id)
        if aggregate is None:
            with self.metrics.redis("campaign_read"):
                raw = await self.store.client.get(self.keys.campaign(partition, campaign_id))
            aggregate = (
                CampaignAggregate.from_json(orjson.loads(raw)) if raw else CampaignAggregate(campaign_id)
            )
            state.campaigns[campaign_id] = aggregate
        return aggregate

    async def process(self, records: Sequence[Record]) -> None:
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        # In partition order, one after the other: deal ids and coupon codes are
        # registered in untagged keys shared by all campaign partitions. A partition's
        # records are applied in runs of at most ROITRACK_BATCH_MAX_PARTITION_BYTES.
        for partition, partition_records in sorted(by_partition.items()):
            for run in split_by_bytes(partition_records, self.settings.batch_max_partition_bytes):
                if not await self._process_run(partition, run):
                    break  # the partition reloads or reads again first, so its later runs come again
        await self.emit_due()

    async def _process_run(self, partition: int, records: Sequence[Record]) -> bool:
        """Apply one run of a partition's records; return False when it was not applied."""
        state = await self._partition(partition)
        async with state.lock:
            try:
                if offset_gap_topics("campaign", partition, records, state.offsets, state.continuity_checked):
                    await self._read_again(partition)
                    return False
                return await self._ingest(partition, state, records)
            except BaseException:
                # In-memory aggregates may be ahead of Redis now; reload on the next batch.
                self.partitions.pop(partition, None)
                raise

    def _collect_credit_array(
        self, record: Record, items: list[Any], credits: list[tuple[Record, CheckedCredit]], dead: list[Outgoing],
        future_limit_ms: int,
    ) -> None:
        """Add the valid credits of an array to ``credits``, and a dead letter per invalid item to ``dead``."""
        settings = self.settings
        for index, item in enumerate(items):
            checked = self._on_partition(check_credit_item(item, future_limit_ms), record.partition)
            if isinstance(checked, CheckedCredit):
                credits.append((record, checked))
                continue
            dead.append(dead_letter(
                settings.topic_dead_letters, record, _dead_reason(checked), [checked], "roi.decode",
                settings.dead_letter_payload_max_bytes, raw=dumps_or_repr(item), event_index=index,
            ))

    def _on_partition(self, checked: CheckedCredit | FieldError, partition: int) -> CheckedCredit | FieldError:
        """Reject a credit that arrived on another partition than its campaign's.

        Its campaign's aggregate lives on the campaign's murmur2 partition, so
        applying it here would start a second aggregate of the same campaign.
        """
        if isinstance(checked, FieldError):
            return checked
        expected = partition_for_key(checked.value["campaign_id"].encode(), self.settings.campaign_partitions)
        if expected == partition:
            return checked
        return FieldError(field=WRONG_PARTITION_FIELD, value=checked.value["campaign_id"], reason=(
            f"campaign {checked.value['campaign_id']!r} belongs on partition {expected} under Kafka's default "
            f"murmur2 partitioner, but the credit arrived on partition {partition}; produce credits keyed by "
            "campaign_id with the default partitioner"))

    async def _read_again(self, partition: int) -> None:
        """Read the partition's topics again from the offsets stored in Redis."""
        settings = self.settings
        topics = (settings.topic_credits, settings.topic_campaigns, settings.topic_spend)
        await rewind_to_stored(self.store, self.keys.offsets(self.keys.campaign_tag(partition)), partition, topics, self.rewind)

    async def _ingest(self, partition: int, state: CampaignPartition, records: Sequence[Record]) -> bool:
        """Apply a partition's records; return False when Redis rejected the write and the state was dropped."""
        settings = self.settings
        batch = FencedBatch(self.keys.offsets(self.keys.campaign_tag(partition)))
        dead: list[Outgoing] = []
        credits: list[tuple[Record, CheckedCredit]] = []
        definitions: list[tuple[Record, Campaign | Spend]] = []
        messages_in: dict[str, int] = defaultdict(int)
        events_in: dict[str, int] = defaultdict(int)
        social = SocialBatch()
        progress: dict[int, SourceProgress] = {}
        progress_in = 0
        future_limit_ms = future_time_limit_ms(int(time.time() * 1000), settings.max_future_skew_s)

        for record in records:
            if record.offset <= state.offsets.get(record.topic, -1):
                continue
            batch.cover(record.topic, record.offset, record.offset, state.offsets.get(record.topic, -1))
            problem: FieldError | None = None
            if record.topic == settings.topic_credits:
                try:
                    value = orjson.loads(record.value or b"")
                except orjson.JSONDecodeError as exc:
                    preview = describe_value((record.value or b"").decode("utf-8", "replace"))
                    value, problem = None, FieldError(field="(message)", value=preview, reason=f"not valid JSON: {exc}")
                else:
                    if is_progress_message(value):
                        decoded = decode_progress(value, settings.person_partitions)
                        if not isinstance(decoded, FieldError):
                            source, reported = decoded
                            progress[source] = merge_progress(progress.get(source), reported)
                            progress_in += 1
                            continue
                        problem = decoded
                    elif is_credit_batch(value):
                        messages_in[record.topic] += 1
                        events_in[record.topic] += len(value)
                        self._collect_credit_array(record, value, credits, dead, future_limit_ms)
                        continue
                    elif is_fact_message(value):
                        messages_in[record.topic] += 1
                        events_in[record.topic] += 1
                        self.social.collect_facts(social, record, value, dead)
                        continue
                    else:
                        checked = self._on_partition(check_credit(value, future_limit_ms), record.partition)
                        if isinstance(checked, CheckedCredit):
                            credits.append((record, checked))
                        else:
                            problem = checked
                messages_in[record.topic] += 1
                events_in[record.topic] += 1
                if problem is not None:
                    dead.append(dead_letter(settings.topic_dead_letters, record, _dead_reason(problem), [problem],
                                            "roi.decode", settings.dead_letter_payload_max_bytes))
                continue
            messages_in[record.topic] += 1
            items = decode_message(record.value)
            events_in[record.topic] += len(items)
            for item in items:
                if isinstance(item, Rejected):
                    dead.append(rejected_dead_letter(settings.topic_dead_letters, record, item, "roi.decode",
                                                     settings.dead_letter_payload_max_bytes))
                elif isinstance(item, (Campaign, Spend)):
                    if isinstance(item, Spend) and item.currency != settings.reporting_currency:
                        dead.append(dead_letter(
                            settings.topic_dead_letters, record, "unsupported",
                            [FieldError(field="currency", value=item.currency,
                                        reason=f"only the reporting currency {settings.reporting_currency} is supported")],
                            "roi.spend", settings.dead_letter_payload_max_bytes,
                        ))
                        continue
                    definitions.append((record, item))
                elif not self.social.collect_definition(social, record, item):
                    event_type = getattr(item, "type", None)
                    target = input_topic(settings, event_type) if isinstance(event_type, str) else None
                    dead.append(dead_letter(
                        settings.topic_dead_letters, record, "unsupported",
                        [FieldError(field="type", value=event_type,
                                    reason=f"event type does not belong on topic {record.topic}; send it to "
                                           f"{target or 'its own topic'}")],
                        "roi.route", settings.dead_letter_payload_max_bytes,
                    ))

        await self.social.prepare(social, dead)
        if dead:
            await self.send(dead)
            self.stats["dead_letters"] += len(dead)
            log.warning(
                "sent %d dead letter(s) from campaign partition=%d", len(dead), partition,
                extra={"partition": partition, "dead_letters": len(dead)},
            )

        # Drop credits applied before: same credit id seen within the horizon. The
        # same round reads the history buckets of every credit, fresh or not.
        seen_key = self.keys.seen_credits(partition)
        fresh: list[CheckedCredit] = []
        reads = Round(self.store.client)
        history_reads = self._history_reads(reads, partition, credits)
        ids = [checked.value["credit_id"] for _, checked in credits] + social.fact_ids()
        dedup_index = reads.command("ZMSCORE", seen_key, *ids) if ids else None
        with self.metrics.redis("dedup_read"):
            replies = await reads.execute()
        stored_history = {
            (campaign_id, start_ms): raw
            for campaign_id, (index, starts) in history_reads.items()
            for start_ms, raw in zip(starts, replies[index])
        }
        if dedup_index is not None:
            seen = {seen_id for seen_id, score in zip(ids, replies[dedup_index]) if score is not None}
            batch_ids: set[str] = set()
            for _, checked in credits:
                credit_id = checked.value["credit_id"]
                if credit_id in seen or credit_id in batch_ids:
                    self.stats["duplicate_credits"] += 1
                    continue
                batch_ids.add(credit_id)
                fresh.append(checked)
            self.social.drop_seen(social, seen)

        changed: set[str] = set()
        watermark_ms = state.watermark_ms
        wall_ms = int(time.time() * 1000)
        seen_pairs: list[str | int] = []
        history: list[HistoryCredit] = []
        figures: list[CreditFigures] = []
        aggregates: dict[str, CampaignAggregate] = {}
        try:
            for checked in fresh:
                value, time_ms = checked.value, checked.time_ms
                watermark_ms = max(watermark_ms, min(time_ms, wall_ms))
                seen_pairs.extend((wall_ms, value["credit_id"]))
                if value.get("deal_id") is not None:
                    social.deal_credits.append((value, time_ms))  # counted once its deal is active
                    continue
                aggregate = await self._campaign(partition, state, value["campaign_id"])
                aggregates[aggregate.campaign_id] = aggregate
                figures.append((aggregate.campaign_id, time_ms, checked.weights, checked.revenue))
                changed.add(aggregate.campaign_id)
            # Summed per campaign and minute first: the windows and the history then add each sum once.
            for (campaign_id, start_ms), totals in sum_by_span(figures, self.span_ms).items():
                aggregates[campaign_id].add_credit(start_ms, totals.conversions, totals.revenue, settings.roi_windows_s)
                history.append(HistoryCredit(campaign_id, start_ms, totals.conversions, totals.revenue))
            for record, definition in definitions:
                aggregate = await self._campaign(partition, state, definition.campaign_id)
                if isinstance(definition, Campaign):
                    aggregate.set_campaign(definition.name, definition.margin, definition.channel)
                    if definition.coupon_codes:
                        mapping: list[str] = []
                        for code in definition.coupon_codes:
                            mapping.extend((code, definition.campaign_id))
                        # The coupon map is global, so it is written outside the fenced batch;
                        # writing the same mapping twice is harmless.
                        await self.store.client.hset(self.keys.coupons(), mapping=dict(zip(mapping[::2], mapping[1::2])))
                else:
                    aggregate.set_spend(
                        definition.spend_id,
                        SpendRecord(definition.amount, epoch_ms(definition.period_start), epoch_ms(definition.period_end)),
                    )
                changed.add(aggregate.campaign_id)
            sources = dict(state.sources)
            for source, reported in progress.items():
                sources[source] = merge_progress(sources.get(source), reported)
            deal_events, watermark_ms = await self.social.apply(
                partition, state, social, batch, watermark_ms, deal_clock(sources, settings.person_partitions),
                wall_ms, changed, seen_pairs, lambda campaign_id: self._campaign(partition, state, campaign_id),
            )
        except (ArithmeticError, ValueError, KeyError, TypeError) as exc:
            # Credits come from our own attribution agent; a malformed one is a bug, not input.
            log.error("campaign partition=%d: cannot apply batch: %r", partition, exc)
            raise

        for campaign_id in changed:
            aggregate = state.campaigns[campaign_id]
            aggregate.prune(watermark_ms)
            batch.command("SET", self.keys.campaign(partition, campaign_id), orjson.dumps(aggregate.to_json()))
        if changed:
            batch.command_many("SADD", self.keys.campaign_index(partition), sorted(changed))
        if seen_pairs:
            batch.command_many("ZADD", seen_key, seen_pairs, group=2)
            batch.command("ZREMRANGEBYSCORE", seen_key, "-inf", f"({wall_ms - settings.dedup_horizon_s * 1000}")
        if watermark_ms != state.watermark_ms:
            batch.command("HSET", batch.offsets_key, WATERMARK_FIELD, watermark_ms)
        moved = {source: value for source, value in sources.items() if state.sources.get(source) != value}
        if moved:
            batch.command_many("HSET", batch.offsets_key, [
                item for pair in encode_sources(moved).items() for item in pair
            ], group=2)
        if history:
            self._add_history(partition, batch, history, stored_history)
        # Deal events go out before the state that records them, so a crash sends them
        # again (same event ids) rather than never.
        await self.send(deal_events)

        try:
            await self.store.apply(batch)
        except StaleBatch as exc:
            log.warning("campaign partition=%d: %s", partition, exc)
            self.partitions.pop(partition, None)
            return False
        except StateRolledBack as exc:
            log.error("campaign partition=%d: %s", partition, exc)
            self.partitions.pop(partition, None)
            await self._read_again(partition)
            return False

        for topic, (_, last) in batch.offset_ranges.items():
            state.offsets[topic] = last
        state.watermark_ms = watermark_ms
        state.sources = sources
        state.dirty |= changed
        self.stats["credits_applied"] += len(fresh)
        self.stats["facts_applied"] += len(social.facts)
        self.stats["duplicate_facts"] += social.duplicates
        if progress_in:
            self.metrics.progress_messages.labels("in").inc(progress_in)
        for topic, value in messages_in.items():
            self.metrics.messages_in.labels(topic).inc(value)
        for topic, value in events_in.items():
            self.metrics.events_in.labels(topic).inc(value)
        if len(credits) > len(fresh):
            self.metrics.duplicates.labels(settings.topic_credits).inc(len(credits) - len(fresh))
        return True

    def _history_reads(
        self, reads: Round, partition: int, credits: Sequence[tuple[Record, CheckedCredit]],
    ) -> dict[str, tuple[int, list[int]]]:
        """Queue an HMGET of the history buckets the credits fall in, and return campaign -> (reply index, bucket starts)."""
        bucket_s = self.settings.roi_history_bucket_s
        starts_by_campaign: dict[str, set[int]] = defaultdict(set)
        for _, checked in credits:
            if checked.value.get("deal_id") is None:
                starts_by_campaign[checked.value["campaign_id"]].add(bucket_start_ms(checked.time_ms, bucket_s))
        requested: dict[str, tuple[int, list[int]]] = {}
        for campaign_id, starts_set in sorted(starts_by_campaign.items()):
            starts = sorted(starts_set)
            index = reads.command("HMGET", self.keys.history(partition, campaign_id), *(str(start) for start in starts))
            requested[campaign_id] = (index, starts)
        return requested

    def _add_history(
        self, partition: int, batch: FencedBatch, credits: Sequence[HistoryCredit],
        stored: dict[tuple[str, int], bytes | None],
    ) -> None:
        """Add the credits to their stored history buckets, written with the batch.

        ``stored`` contains the buckets read in the batch's first round, which
        ``_history_reads`` queued for every credit that is not a deal's. The buckets
        are written back whole in the fenced script. That is safe because each
        campaign partition has one writer, and the fence drops the whole write
        when another worker took the partition over.
        """
        increments = history_increments(credits, self.settings.roi_history_bucket_s)
        for campaign_id, buckets in sorted(increments.items()):
            fields: list[str | int | float | bytes] = []
            for start_ms in sorted(buckets):
                totals = decode_totals(stored[(campaign_id, start_ms)])
                totals.merge(buckets[start_ms])
                fields.extend((str(start_ms), encode_totals(totals)))
            batch.command_many("HSET", self.keys.history(partition, campaign_id), fields, group=2)

    async def emit_due(self, force: bool = False) -> None:
        """Publish RoiUpdates of changed campaigns whose throttle interval has passed."""
        for partition, state in list(self.partitions.items()):
            if state.dirty:
                async with state.lock:
                    await self._emit_partition(partition, state, force)

    async def _emit_partition(self, partition: int, state: CampaignPartition, force: bool) -> None:
        interval_s = self.settings.roi_update_interval_s
        now_s = time.monotonic()
        due = sorted(
            campaign_id for campaign_id in state.dirty
            if force or now_s - state.last_emit_s.get(campaign_id, 0.0) >= interval_s
        )
        if not due:
            return
        pipe = self.store.client.pipeline(transaction=False)
        for campaign_id in due:
            pipe.hincrby(self.keys.sequences(partition), campaign_id, 1)
        with self.metrics.redis("sequence_write"):
            sequences = await pipe.execute()
        outgoing: list[Outgoing] = []
        for campaign_id, sequence in zip(due, sequences):
            outgoing.extend(self.roi_updates(
                state.campaigns[campaign_id], int(sequence), state.watermark_ms, state.social.get(campaign_id),
            ))
            state.last_emit_s[campaign_id] = now_s
        await self.send(outgoing)
        state.dirty -= set(due)
        self.stats["roi_updates"] += len(outgoing)

    def roi_updates(
        self, aggregate: CampaignAggregate, sequence: int, now_ms: int, social: SocialAggregate | None = None,
    ) -> list[Outgoing]:
        settings = self.settings
        emitted_at = utc_now().isoformat().replace("+00:00", "Z")
        windows: list[int | None] = [*settings.roi_windows_s, None]
        messages = []
        for window_s in windows:
            figures = window_figures(aggregate, window_s, now_ms)
            value = {
                "type": "roi_update",
                "campaign_id": aggregate.campaign_id,
                "campaign_name": aggregate.name,
                "window": figures["window"],
                "window_s": window_s,
                "window_end": figures["window_end"],
                "sequence": sequence,
                "currency": settings.reporting_currency,
                "margin": _text(aggregate.margin),
                "spend": figures["spend"],
                "default_model": DEFAULT_MODEL,
                "roi": figures["roi"],
                "roas": figures["roas"],
                "cpa": figures["cpa"],
                "models": figures["models"],
                "emitted_at": emitted_at,
                **self.social.update_fields(social, window_s, now_ms, Decimal(figures["spend"])),
            }
            messages.append(Outgoing(settings.topic_roi_updates, aggregate.campaign_id, value))
        return messages


def window_figures(aggregate: CampaignAggregate, window_s: int | None, now_ms: int) -> dict[str, Any]:
    """Compute one window's figures as text, as a RoiUpdate and the query API report them.

    ``window_s`` None selects the lifetime. ``now_ms`` is the campaign
    partition's watermark, where the rolling windows end. Spend and revenue
    are rounded to ``MONEY_PLACES`` (6 decimal places), and ROI, ROAS and CPA
    are computed from the exact figures. No I/O.
    """
    figures = aggregate.figures(window_s, now_ms)
    models = {}
    for model in ATTRIBUTION_MODELS:
        conversions = figures.totals.conversions[model]
        revenue = figures.totals.revenue[model]
        metrics = roi_metrics(revenue, conversions, figures.spend, figures.margin)
        models[model] = {
            "conversions": decimal_text(conversions),
            "revenue": decimal_text(round_money(revenue)),
            "roi": _text(metrics.roi),
            "roas": _text(metrics.roas),
            "cpa": _text(metrics.cpa),
        }
    default = models[DEFAULT_MODEL]
    return {
        "window": window_label(window_s),
        "window_s": window_s,
        "window_end": iso_ms(now_ms) if window_s is not None and now_ms else None,
        "spend": decimal_text(round_money(figures.spend)),
        "default_model": DEFAULT_MODEL,
        "roi": default["roi"],
        "roas": default["roas"],
        "cpa": default["cpa"],
        "models": models,
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)
