"""Person-side social work of the attribution agent: engagements, referral codes and referrals.

The attribution agent calls these hooks:

- ``prepare``, on each partition batch after deduplication and before the
  fenced write. It builds an engagement fact per new engagement and registers
  the referral codes of shares in the untagged hash ``<ns>:referral_codes``,
  where the first share wins. It looks up the campaign of each purchased deal
  in ``<ns>:deals``. Every click or sign-up with a referral code, and every
  purchase, is queued for its referral decision. A purchase of an unknown
  deal, and a share whose code belongs to another share, become dead letters.
- ``write``, which adds the queued referrals to the batch's fenced write.
- ``due_referrals``, ``add_reads``, ``decide``, ``add_write`` and ``finish``,
  with each release, in the release's read and write rounds
  (``AttributionProcessor._settle``). Queued referrals become due by the same
  two rules as conversions (see ``streams.release``). Per person, in
  event-time order, ``roitrack.referrals.resolve_referral`` decides them
  against the code's owner and the person's stored referrer and first
  purchase. The facts are sent first. Then one script removes the referrals
  from the queue and, for each one it removed, stores the person's new facts
  and counts it.

A referral whose code is unknown waits up to ``ROITRACK_REFERRAL_CODE_WAIT_S``
for the share, which another partition may apply later, and blocks the
person's later referrals meanwhile. After that it becomes a dead letter and is
decided without its code.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from roitrack.referrals import Action, CodeOwner, PersonReferrals, ReferralItem, resolve_referral
from roitrack.settings import Settings
from schemas.events import ENGAGEMENT_KINDS, Click, Identify, Purchase, SocialTouch
from schemas.outputs import FieldError
from streams.crediting import PendingConversion, with_campaigns
from streams.facts import engagement_fact, pack_facts, referral_fact
from streams.records import Outgoing, Record, Send, dead_letter
from streams.state import FencedBatch, Round, StateStore

if TYPE_CHECKING:
    from streams.attribution import BatchPlan, PartitionState
    from streams.release import Releaser

log = logging.getLogger(__name__)

# Removes decided referrals from the queue (KEYS[1]) and, for each one removed,
# adds the person's new facts with HSETNX and counts it in the stats hash
# (KEYS[2]); KEYS[3..] are the persons' referral hashes. ARGV: groups of
# (member, key index or 0, pair count, field, value..., stat count, stat...).
# A referral decided twice (by a worker that lost the partition) is applied
# once. Returns the number removed.
_RESOLVE_LUA = """
local ttl_ms = tonumber(ARGV[1])
local removed = 0
local i = 2
while i <= #ARGV do
  local hit = redis.call('ZREM', KEYS[1], ARGV[i]) == 1
  local key_index = tonumber(ARGV[i + 1])
  local pair_count = tonumber(ARGV[i + 2])
  local j = i + 3
  if hit then removed = removed + 1 end
  for _ = 1, pair_count do
    if hit then redis.call('HSETNX', KEYS[key_index], ARGV[j], ARGV[j + 1]) end
    j = j + 2
  end
  if hit and ttl_ms > 0 then redis.call('PEXPIRE', KEYS[key_index], ttl_ms) end
  local stat_count = tonumber(ARGV[j])
  j = j + 1
  for _ = 1, stat_count do
    if hit then redis.call('HINCRBY', KEYS[2], ARGV[j], 1) end
    j = j + 1
  end
  i = j
end
return removed
"""


@dataclass(slots=True)
class QueuedReferral:
    """A queued referral, with where its event came from and when this worker got it."""

    member: bytes
    item: ReferralItem
    source: tuple[str, int, int]
    arrived_s: float


def encode_referral(item: ReferralItem, source: tuple[str, int, int]) -> bytes:
    data = {
        "id": item.item_id, "k": item.action, "p": item.person_id, "a": item.anonymous_id, "code": item.code,
        "t": item.time_ms, "amt": format(item.amount, "f"), "deal": item.deal_id, "dc": item.deal_campaign,
        "src": list(source),
    }
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def decode_referral(member: bytes, arrived_s: float) -> QueuedReferral:
    data = orjson.loads(member)
    item = ReferralItem(
        item_id=data["id"], action=data["k"], person_id=data["p"], anonymous_id=data.get("a"),
        code=data.get("code"), time_ms=int(data["t"]), amount=Decimal(data.get("amt", "0")),
        deal_id=data.get("deal"), deal_campaign=data.get("dc"),
    )
    topic, partition, offset = data["src"]
    return QueuedReferral(member, item, (str(topic), int(partition), int(offset)), arrived_s)


def encode_owner(owner: CodeOwner) -> str:
    return orjson.dumps(
        {"a": owner.advocate_id, "c": owner.campaign_id, "d": owner.deal_id}, option=orjson.OPT_SORT_KEYS
    ).decode()


def decode_owner(raw: bytes | str) -> CodeOwner:
    data = orjson.loads(raw)
    return CodeOwner(data["a"], data["c"], data.get("d"))


@dataclass(slots=True)
class SocialPlan:
    """The engagement facts, dead letters, pending conversions and queued referrals of one partition batch."""

    facts: list[Outgoing] = field(default_factory=list)
    dead: list[Outgoing] = field(default_factory=list)
    pending: list[PendingConversion] = field(default_factory=list)
    queued: list[QueuedReferral] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(slots=True)
class ReferralDecisions:
    """One partition's due referrals: what they read, and, once decided, what they send and write."""

    partition: int
    now_s: float
    by_person: dict[str, list[QueuedReferral]]
    persons: list[str]
    codes: list[str]
    read_indexes: list[int] = field(default_factory=list)
    dead: list[Outgoing] = field(default_factory=list)
    decided: list[bytes] = field(default_factory=list)
    #: Dead letters and packed referral facts, sent before the write.
    outputs: list[Outgoing] = field(default_factory=list)
    #: KEYS and ARGV of the script that removes the decided referrals.
    write: tuple[list[str], list[str | int | bytes]] = field(default_factory=lambda: ([], []))


class PersonSocial:
    """The attribution agent's social hooks; see the module docstring."""

    def __init__(self, settings: Settings, store: StateStore, send: Send, releaser: "Releaser") -> None:
        self.settings = settings
        self.store = store
        self.keys = store.keys
        self.send = send
        self.releaser = releaser
        self._resolve = store.client.register_script(_RESOLVE_LUA)

    async def load(self, partition: int, state: "PartitionState") -> None:
        """Read the partition's queued referrals into its cached state."""
        now_s = time.monotonic()
        members: list[bytes] = await self.store.client.zrange(self.keys.referral_queue(partition), 0, -1)  # type: ignore[assignment]  # bytes: decode_responses=False
        for member in members:
            state.referrals[member] = decode_referral(member, now_s)

    # --- ingest ----------------------------------------------------------

    async def prepare(
        self, partition: int, plan: "BatchPlan", new_pending: list[PendingConversion]
    ) -> SocialPlan:
        """Build the batch's engagement facts and referrals; register codes and look up deals."""
        settings = self.settings
        result = SocialPlan()
        now_s = time.monotonic()
        facts: list[dict[str, Any]] = []
        shares: dict[str, tuple[str, SocialTouch, Record | None]] = {}
        events: list[tuple[Any, Record | None]] = [(touch.event, touch.record) for touch in plan.touches]
        events.extend(plan.social)
        for event, record in events:
            if isinstance(event, SocialTouch) and event.kind in ENGAGEMENT_KINDS:
                facts.append(engagement_fact(event))
                if event.referral_code is not None:
                    # Both lists keep the batch's order, so a code shared twice goes to its first share.
                    owner = CodeOwner(event.person_id, event.campaign_id, event.deal_id)
                    shares.setdefault(event.referral_code, (encode_owner(owner), event, record))
            elif isinstance(event, (Click, Identify)) and event.referral_code is not None:
                action: Action = "click" if isinstance(event, Click) else "signup"
                anonymous_id = event.anonymous_id if event.user_id is not None else None
                item = ReferralItem(event.event_id, action, event.person_id, anonymous_id, event.referral_code, event.event_time_ms)
                result.queued.append(self._queued(item, record, partition, now_s))
        result.counts["engagement_facts"] = len(facts)

        purchases = {event.event_id: (event, record) for event, record in plan.conversions if isinstance(event, Purchase)}
        deal_ids = sorted({pending.deal_id for pending in new_pending if pending.deal_id is not None})
        purchase_codes = {pending.referral_code for pending in new_pending if pending.referral_code is not None}
        owners, deal_campaigns = await self._register_and_look_up(shares, purchase_codes, deal_ids)

        for code, (ours, event, record) in sorted(shares.items()):
            stored = owners.get(code)
            if stored is not None and stored != ours:
                result.dead.append(self._dead(record, event, "referral_code", code, (
                    "this referral code was registered by an earlier share of another advocate, campaign or "
                    "deal; give each shared campaign or deal its own code"), "referrals.register"))

        for pending in new_pending:
            deal_campaign = deal_campaigns.get(pending.deal_id) if pending.deal_id is not None else None
            if pending.deal_id is not None and deal_campaign is None:
                event, record = purchases[pending.conversion_id]
                result.dead.append(self._dead(record, event, "deal_id", pending.deal_id, (
                    "no deal with this id is defined; produce the Deal to the campaigns topic, wait until "
                    "the worker applied it, then re-drive this dead letter"), "referrals.deal"))
                continue
            pending = with_campaigns(pending, deal_campaign, self._referral_campaign(pending, owners))
            result.pending.append(pending)
            if pending.conversion_type == "purchase":
                _, record = purchases[pending.conversion_id]
                item = ReferralItem(
                    pending.conversion_id, "purchase", pending.person_id, pending.anonymous_id,
                    pending.referral_code, pending.time_ms, pending.amount, pending.deal_id, pending.deal_campaign,
                )
                result.queued.append(self._queued(item, record, partition, now_s))
        result.facts = pack_facts(settings.topic_credits, facts)
        return result

    async def _register_and_look_up(
        self, shares: dict[str, tuple[str, SocialTouch, Record | None]], purchase_codes: set[str], deal_ids: list[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Register share codes (first share wins); read the owners of all codes and the deals' campaigns, in one round trip."""
        codes = sorted(set(shares) | purchase_codes)
        if not codes and not deal_ids:
            return {}, {}
        # Written before the fenced write, like the flood sets: every partition reads
        # this hash, and writing the same first owner again changes nothing.
        pipe = self.store.client.pipeline(transaction=False)
        for code in sorted(shares):
            pipe.hsetnx(self.keys.referral_codes(), code, shares[code][0])
        if codes:
            pipe.hmget(self.keys.referral_codes(), codes)
        if deal_ids:
            pipe.hmget(self.keys.deals(), deal_ids)
        results = await pipe.execute()
        owners: dict[str, str] = {}
        if codes:
            owners = {code: _text(raw) for code, raw in zip(codes, results[len(shares)]) if raw is not None}
        deal_campaigns: dict[str, str] = {}
        if deal_ids:
            deal_campaigns = {deal: _text(raw) for deal, raw in zip(deal_ids, results[-1]) if raw is not None}
        return owners, deal_campaigns

    @staticmethod
    def _referral_campaign(pending: PendingConversion, owners: dict[str, str]) -> str | None:
        """Return the campaign of a purchase's referral code, unless unknown yet or the buyer's own code."""
        if pending.conversion_type != "purchase" or pending.referral_code is None:
            return None
        raw = owners.get(pending.referral_code)
        if raw is None:
            return None
        owner = decode_owner(raw)
        if owner.advocate_id in (pending.person_id, pending.anonymous_id):
            return None
        return owner.campaign_id

    def _queued(self, item: ReferralItem, record: Record | None, partition: int, now_s: float) -> QueuedReferral:
        source = (record.topic, record.partition, record.offset) if record is not None else ("", partition, -1)
        return QueuedReferral(encode_referral(item, source), item, source, now_s)

    def _dead(self, record: Record | None, event: Any, name: str, value: str, reason: str, step: str) -> Outgoing:
        source = record or Record(self.settings.topic_touchpoints, -1, -1, None, None)
        return dead_letter(
            self.settings.topic_dead_letters, source, "unsupported", [FieldError(field=name, value=value, reason=reason)],
            step, self.settings.dead_letter_payload_max_bytes,
            raw=orjson.dumps(event.model_dump(mode="json", exclude_none=True)),
        )

    def write(self, batch: FencedBatch, partition: int, social: SocialPlan) -> None:
        """Add the queued referrals to the fenced write."""
        if social.queued:
            pairs: list[str | int | bytes] = []
            for queued in social.queued:
                pairs.extend((queued.item.time_ms, queued.member))
            batch.command_many("ZADD", self.keys.referral_queue(partition), pairs, group=2)

    def applied(self, state: "PartitionState", social: SocialPlan) -> None:
        """Cache the queued referrals once the fenced write succeeded."""
        for queued in social.queued:
            state.referrals[queued.member] = queued

    # --- release ---------------------------------------------------------

    async def _due(self, partition: int, state: "PartitionState", now_s: float) -> list[QueuedReferral]:
        """Select the queued referrals that the conversion settle rules release now."""
        due: list[QueuedReferral] = []
        waiting: list[QueuedReferral] = []
        for queued in state.referrals.values():
            if queued.item.time_ms + self.releaser.settle_ms <= state.watermark_ms:
                due.append(queued)
            elif now_s - queued.arrived_s >= self.settings.conversion_idle_release_s:
                waiting.append(queued)
        if waiting and await self.releaser.touchpoints_caught_up(partition, state, now_s):
            due.extend(waiting)
        return due

    async def due_referrals(self, partition: int, state: "PartitionState") -> ReferralDecisions | None:
        """Return the partition's due referrals, grouped by person, or None when none is due."""
        if not state.referrals:
            return None
        now_s = time.monotonic()
        due = await self._due(partition, state, now_s)
        if not due:
            return None
        by_person: dict[str, list[QueuedReferral]] = defaultdict(list)
        for queued in due:
            by_person[queued.item.person_id].append(queued)
        codes = sorted({queued.item.code for queued in due if queued.item.code is not None})
        return ReferralDecisions(partition, now_s, dict(by_person), sorted(by_person), codes)

    def add_reads(self, reads: Round, decisions: ReferralDecisions) -> None:
        """Queue the reads the decisions need: the codes' owners and each person's referral hash."""
        if decisions.codes:
            decisions.read_indexes.append(reads.command("HMGET", self.keys.referral_codes(), *decisions.codes))
        for person_id in decisions.persons:
            decisions.read_indexes.append(
                reads.command("HGETALL", self.keys.person_referrals(decisions.partition, person_id))
            )

    def decide(self, decisions: ReferralDecisions, replies: list[Any]) -> None:
        """Decide the due referrals from the replies of ``add_reads``, as the module docstring describes."""
        results = [replies[index] for index in decisions.read_indexes]
        codes = decisions.codes
        owners = {code: decode_owner(raw) for code, raw in zip(codes, results[0]) if raw is not None} if codes else {}
        stored = results[1:] if codes else results
        partition = decisions.partition
        facts: list[dict[str, Any]] = []
        keys = [self.keys.referral_queue(partition), self.keys.person_stats(partition)]
        # The person's hash expires ROITRACK_REFERRAL_STATE_TTL_S after their last decided referral.
        args: list[str | int | bytes] = [self.settings.referral_state_ttl_s * 1000]
        for person_id, raw_fields in zip(decisions.persons, stored):
            person = PersonReferrals.from_hash({_text(name): _text(value) for name, value in raw_fields.items()})
            keys.append(self.keys.person_referrals(partition, person_id))
            key_index = len(keys)
            for queued in sorted(decisions.by_person[person_id], key=lambda queued: (queued.item.time_ms, queued.item.item_id)):
                item = queued.item
                owner = owners.get(item.code) if item.code is not None else None
                stats: list[str] = []
                if item.code is not None and owner is None:
                    if decisions.now_s - queued.arrived_s < self.settings.referral_code_wait_s:
                        break  # the person's later referrals wait for this one
                    decisions.dead.append(self._unknown_code(queued))
                    stats.append("referrals_unknown_code")
                outcomes, writes = resolve_referral(item, owner, person)
                for decision in outcomes:
                    facts.append(referral_fact(decision))
                    if decision.outcome != "credited":
                        stats.append(f"referrals_{decision.outcome}")
                    elif decision.with_code:
                        stats.append("referrals_credited")
                    if decision.new_customer:
                        stats.append("referral_new_customers")
                args.extend((queued.member, key_index, len(writes)))
                for name, value in sorted(writes.items()):
                    args.extend((name, value))
                args.append(len(stats))
                args.extend(stats)
                decisions.decided.append(queued.member)
        decisions.outputs = decisions.dead + pack_facts(self.settings.topic_credits, facts)
        decisions.write = (keys, args)

    def add_write(self, writes: Round, decisions: ReferralDecisions) -> int | None:
        """Queue the script that removes the decided referrals and stores their facts, and return its reply index.

        Returns None when no referral was decided.
        """
        if not decisions.decided:
            return None
        keys, args = decisions.write
        return writes.script(self._resolve, keys, args)

    def finish(self, state: "PartitionState", decisions: ReferralDecisions, removed: int) -> None:
        """Drop the decided referrals from the cached queue, after the script removed them from Redis."""
        for member in decisions.decided:
            state.referrals.pop(member, None)
        if removed != len(decisions.decided):
            log.warning(
                "person partition=%d: %d of %d decided referrals were no longer queued (decided by another "
                "worker, or lost by Redis); they are not counted again",
                decisions.partition, len(decisions.decided) - int(removed), len(decisions.decided),
            )

    def _unknown_code(self, queued: QueuedReferral) -> Outgoing:
        item = queued.item
        topic, partition, offset = queued.source
        event_type = {"click": "click", "signup": "identify", "purchase": "purchase"}[item.action]
        payload = {"type": event_type, "event_id": item.item_id, "person_id": item.person_id, "referral_code": item.code}
        log.warning(
            "referral code %r of %s %s is unknown after %.0f s; counting the event without its referral",
            item.code, item.action, item.item_id, self.settings.referral_code_wait_s,
        )
        return dead_letter(
            self.settings.topic_dead_letters, Record(topic, partition, offset, item.person_id.encode(), None),
            "unsupported",
            [FieldError(field="referral_code", value=item.code, reason=(
                f"no share registered this referral code within {self.settings.referral_code_wait_s:.0f} s "
                "(ROITRACK_REFERRAL_CODE_WAIT_S); the event counts without its referral"))],
            "referrals.resolve", self.settings.dead_letter_payload_max_bytes, raw=orjson.dumps(payload),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
