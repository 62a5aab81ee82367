"""Campaign-side social work of the ROI agent: engagement, referrals and group-buy deals.

The ROI agent (``streams.roi_agent``) calls these hooks for each campaign
partition batch:

1. ``collect_facts`` and ``collect_definition`` sort the social messages out
   of the batch: engagement and referral facts from the credits topic, deal
   definitions from the campaigns topic, impressions and follower snapshots
   from the spend topic.
2. ``prepare`` registers each deal's campaign in the untagged hash
   ``<ns>:deals``, which person partitions read to credit a deal purchase to
   its campaign. A deal in another currency than the reporting currency, or one
   whose id belongs to another campaign, becomes a dead letter.
3. ``drop_seen`` drops facts whose ids are in the partition's seen set, read
   together with the credit ids in one call.
4. ``apply`` counts the facts, definitions and deal purchases, moves the
   partition's event-time watermark, then evaluates every deal of the
   partition: activation, expiry and advocate rewards. It writes each changed
   campaign's social state into the batch's fenced write and returns the
   deal events, which the agent sends before that write.

A campaign's social state is one JSON value, ``<ns>:{cN}:social:<campaign>``,
written whole when it changes, like the campaign aggregate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson

from roitrack.deals import DealPurchase
from roitrack.engagement import ImpressionsRecord, Snapshot
from roitrack.roi import CampaignAggregate
from roitrack.settings import Settings
from roitrack.social import SocialAggregate
from schemas.common import StrictModel, epoch_ms
from schemas.events import Deal, FollowerSnapshot, Impressions
from schemas.outputs import DEFAULT_MODEL, EngagementFact, FieldError, ReferralFact
from streams.deals import apply_effects, count_purchases, deal_figures
from streams.facts import decode_facts
from streams.records import Outgoing, Record, dead_letter, decimal_text
from streams.state import FencedBatch, StateStore

if TYPE_CHECKING:
    from streams.roi_agent import CampaignPartition

log = logging.getLogger(__name__)

SocialDefinition = Deal | Impressions | FollowerSnapshot
CampaignLoader = Callable[[str], Awaitable[CampaignAggregate]]


@dataclass(slots=True)
class SocialBatch:
    """The social messages of one campaign partition batch."""

    facts: list[EngagementFact | ReferralFact] = field(default_factory=list)
    definitions: list[tuple[Record, SocialDefinition]] = field(default_factory=list)
    deal_credits: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    duplicates: int = 0

    def fact_ids(self) -> list[str]:
        return [fact.fact_id for fact in self.facts]


class CampaignSocial:
    """The ROI agent's social hooks; see the module docstring."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.keys = store.keys

    # --- loading -----------------------------------------------------------

    async def aggregate(self, partition: int, state: "CampaignPartition", campaign_id: str) -> SocialAggregate:
        """Return a campaign's social state, loading it from Redis on first use."""
        social = state.social.get(campaign_id)
        if social is None:
            raw = await self.store.client.get(self.keys.social(partition, campaign_id))
            social = SocialAggregate.from_json(orjson.loads(raw)) if raw else SocialAggregate(campaign_id)
            state.social[campaign_id] = social
        return social

    # --- collecting ----------------------------------------------------------

    def collect_facts(self, batch: SocialBatch, record: Record, value: Any, dead: list[Outgoing]) -> None:
        """Validate one fact message; an invalid fact becomes a dead letter, the others are kept."""
        key = record.key.decode("utf-8", errors="replace") if record.key else None
        for index, decoded in decode_facts(value, key):
            if isinstance(decoded, FieldError):
                item = value[index] if isinstance(value, list) and index is not None else value
                dead.append(dead_letter(
                    self.settings.topic_dead_letters, record, "invalid", [decoded], "roi.facts",
                    self.settings.dead_letter_payload_max_bytes, raw=_dumps(item), event_index=index,
                ))
                continue
            batch.facts.append(decoded)

    def collect_definition(self, batch: SocialBatch, record: Record, item: StrictModel) -> bool:
        """Keep a deal definition, impressions report or follower snapshot; return False for other events."""
        if isinstance(item, (Deal, Impressions, FollowerSnapshot)):
            batch.definitions.append((record, item))
            return True
        return False

    async def prepare(self, batch: SocialBatch, dead: list[Outgoing]) -> None:
        """Reject unusable deal definitions and register the others' campaigns for person partitions."""
        deals: list[tuple[Record, Deal]] = []
        usable: list[tuple[Record, SocialDefinition]] = []
        for record, definition in batch.definitions:
            if isinstance(definition, Deal):
                if definition.currency != self.settings.reporting_currency:
                    dead.append(self._dead(record, definition, "currency", definition.currency, (
                        f"only the reporting currency {self.settings.reporting_currency} is supported; "
                        "convert the price or change ROITRACK_REPORTING_CURRENCY")))
                    continue
                deals.append((record, definition))
            usable.append((record, definition))
        if deals:
            # Written outside the fenced batch, like the coupon map: every person
            # partition reads it, and writing the same campaign again changes nothing.
            ids = [deal.deal_id for _, deal in deals]
            pipe = self.store.client.pipeline(transaction=False)
            for _, deal in deals:
                pipe.hsetnx(self.keys.deals(), deal.deal_id, deal.campaign_id)
            pipe.hmget(self.keys.deals(), ids)
            owners = (await pipe.execute())[-1]
            for (record, deal), owner in zip(deals, owners):
                owner_text = owner.decode() if isinstance(owner, bytes) else owner
                if owner_text != deal.campaign_id:
                    dead.append(self._dead(record, deal, "campaign_id", deal.campaign_id, (
                        f"deal {deal.deal_id} belongs to campaign {owner_text}; a deal cannot move to another "
                        "campaign, so give this deal a new deal_id")))
                    usable.remove((record, deal))
        batch.definitions = usable

    def _dead(self, record: Record, event: StrictModel, name: str, value: str, reason: str) -> Outgoing:
        return dead_letter(
            self.settings.topic_dead_letters, record, "unsupported", [FieldError(field=name, value=value, reason=reason)],
            "roi.deal", self.settings.dead_letter_payload_max_bytes,
            raw=orjson.dumps(event.model_dump(mode="json", exclude_none=True)),
        )

    def drop_seen(self, batch: SocialBatch, seen: set[str]) -> None:
        """Drop facts applied before, and repeats within the batch."""
        fresh = []
        batch_ids: set[str] = set()
        for fact in batch.facts:
            if fact.fact_id in seen or fact.fact_id in batch_ids:
                batch.duplicates += 1
                continue
            batch_ids.add(fact.fact_id)
            fresh.append(fact)
        batch.facts = fresh

    # --- applying ------------------------------------------------------------

    async def apply(
        self,
        partition: int,
        state: "CampaignPartition",
        batch: SocialBatch,
        fenced: FencedBatch,
        watermark_ms: int,
        deal_clock_ms: int | None,
        wall_ms: int,
        changed: set[str],
        seen_pairs: list[str | int],
        load_campaign: CampaignLoader,
    ) -> tuple[list[Outgoing], int]:
        """Count the batch's social messages and evaluate the deals; return the deal events and the watermark.

        Deals expire by ``deal_clock_ms``, the event time every person partition
        has reached (see streams.progress), or not at all while it is None.
        """
        settings = self.settings
        windows_s = settings.roi_windows_s
        touched: set[str] = set()

        for fact in batch.facts:
            social = await self.aggregate(partition, state, fact.campaign_id)
            time_ms = epoch_ms(fact.event_time)
            if isinstance(fact, EngagementFact):
                social.engagement.add_engagement(fact.kind, time_ms, windows_s)
                if fact.advocate_id is not None and fact.deal_id is not None:
                    social.deal(fact.deal_id).add_sharer(fact.advocate_id)
            else:
                social.referrals.apply(
                    fact.advocate_id, fact.action, fact.with_code, fact.outcome,
                    fact.new_person, fact.new_customer, fact.revenue,
                )
                if fact.outcome == "credited" and fact.deal_id is not None:
                    social.deal(fact.deal_id).add_referred_buyer(fact.advocate_id, fact.person_id, time_ms)
            touched.add(fact.campaign_id)
            seen_pairs.extend((wall_ms, fact.fact_id))
            watermark_ms = max(watermark_ms, min(time_ms, wall_ms))

        for _, definition in batch.definitions:
            social = await self.aggregate(partition, state, definition.campaign_id)
            if isinstance(definition, Deal):
                deal = social.deal(definition.deal_id)
                if not deal.define(definition.name, definition.price, definition.threshold, epoch_ms(definition.deadline)):
                    log.warning(
                        "campaign partition=%d: deal %s is %s already; its new definition is ignored",
                        partition, deal.deal_id, deal.status,
                    )
            elif isinstance(definition, Impressions):
                social.engagement.set_impressions(definition.impressions_id, ImpressionsRecord(
                    definition.count, epoch_ms(definition.period_start), epoch_ms(definition.period_end),
                ))
            else:
                social.engagement.set_snapshot(
                    definition.channel, definition.account_id, definition.snapshot_id,
                    Snapshot(epoch_ms(definition.observed_at), definition.followers),
                )
            touched.add(definition.campaign_id)

        for value, time_ms in batch.deal_credits:
            campaign_id = value["campaign_id"]
            social = await self.aggregate(partition, state, campaign_id)
            purchase = DealPurchase(
                credit_id=value["credit_id"],
                conversion_id=value["conversion_id"],
                person_id=str(value.get("person_id") or ""),
                amount=Decimal(value["revenue"].get(DEFAULT_MODEL, "0")),
                time_ms=time_ms,
                weights={model: Decimal(weight) for model, weight in value["weights"].items()},
                revenue={model: Decimal(amount) for model, amount in value["revenue"].items()},
            )
            counted = social.deal(value["deal_id"]).add_purchase(purchase)
            if counted:
                count_purchases(await load_campaign(campaign_id), counted, windows_s)
                changed.add(campaign_id)
            touched.add(campaign_id)

        events: list[Outgoing] = []
        grace_ms = settings.deal_expiry_grace_s * 1000
        for campaign_id, social in sorted(state.social.items()):
            for deal in sorted(social.deals.values(), key=lambda deal: deal.deal_id):
                if deal.status == "expired":
                    continue
                effects = deal.evaluate(deal_clock_ms, grace_ms, settings.advocate_reward_min_buyers)
                if not effects:
                    continue
                aggregate = await load_campaign(campaign_id)
                events.extend(apply_effects(
                    settings.topic_deal_events, settings.reporting_currency, deal, effects, aggregate, windows_s,
                ))
                changed.add(campaign_id)
                touched.add(campaign_id)
                log.info("campaign partition=%d: deal %s: %s", partition, deal.deal_id,
                         ", ".join(type(effect).__name__.lower() for effect in effects))

        longest_window_s = max(windows_s)
        for campaign_id in sorted(touched):
            social = state.social[campaign_id]
            social.engagement.prune(watermark_ms, longest_window_s)
            fenced.command("SET", self.keys.social(partition, campaign_id), orjson.dumps(social.to_json()))
            await load_campaign(campaign_id)  # so a campaign with social figures alone is published too
            changed.add(campaign_id)
        return events, watermark_ms

    # --- publishing ------------------------------------------------------------

    def update_fields(self, social: SocialAggregate | None, window_s: int | None, now_ms: int, spend: Decimal) -> dict[str, Any]:
        """Return the social fields of one RoiUpdate; referrals and deals only in the lifetime update."""
        fields: dict[str, Any] = {"engagement": None, "referrals": None, "deals": None}
        if social is None:
            return fields
        if not social.engagement.empty:
            figures = social.engagement.figures(window_s, now_ms, spend)
            fields["engagement"] = {
                "engagements": figures.counts,
                "total": figures.total,
                "impressions": figures.impressions,
                "engagement_rate": _text(figures.engagement_rate),
                "cost_per_engagement": _text(figures.cost_per_engagement),
                "follower_growth": figures.follower_growth,
                "followers": figures.followers,
            }
        if window_s is not None:
            return fields
        referrals = social.referrals
        if not referrals.empty:
            fields["referrals"] = {
                "referred_people": referrals.referred_people,
                "clicks": referrals.actions["click"],
                "signups": referrals.actions["signup"],
                "purchases": referrals.actions["purchase"],
                "new_customers": referrals.new_customers,
                "revenue": decimal_text(referrals.revenue),
                "self_referrals_rejected": referrals.self_rejected,
                "repeat_referrals_rejected": referrals.repeat_rejected,
                "top_advocates": [
                    {
                        "advocate_id": advocate_id,
                        "referred_people": totals.referred_people,
                        "new_customers": totals.new_customers,
                        "revenue": decimal_text(totals.revenue),
                    }
                    for advocate_id, totals in referrals.top_advocates(self.settings.top_advocates)
                ],
            }
        defined = [deal for _, deal in sorted(social.deals.items()) if deal.defined]
        if defined:
            fields["deals"] = [deal_figures(deal) for deal in defined]
        return fields


def _text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def _dumps(value: Any) -> bytes:
    """Serialise a fact for a dead letter; orjson and repr() both stop at some nesting depth."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return repr(value).encode("utf-8", errors="replace")
        except RecursionError:
            return b"(nested too deeply to show)"
