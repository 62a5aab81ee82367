"""The benchmark's synthetic workload: people who click campaigns and sometimes buy.

Every person clicks one to six campaigns, a few seconds to minutes apart, and
buys with probability ``PURCHASE_PROBABILITY`` a while after the last click.
That gives about 5 % purchases among the events, as in the bundled journey
dataset. The expected last-touch result is known per purchase (the campaign of
the person's latest click), so every consumer's totals can be checked.

A workload is a list of ``Planned`` items in stream order. The backlog runs
encode each item with its planned event time; the live runs stamp it with the
wall clock when it is produced. Pure: no I/O.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

import orjson

from streams.state import partition_for_key

MIN_CLICKS_PER_PERSON = 1
MAX_CLICKS_PER_PERSON = 6
PURCHASE_PROBABILITY = 0.2
#: Seconds between two clicks of a person, and from the last click to the purchase.
CLICK_GAP_S = (1.0, 300.0)
PURCHASE_DELAY_S = (10.0, 600.0)
#: Seconds by which the closing clicks follow the last planned event; more than the
#: default settle delay, so every partition's watermark passes every purchase.
CLOSING_GAP_S = 10.0


@dataclass(frozen=True, slots=True)
class Planned:
    """One event of the workload before it is encoded."""

    kind: str  # "click" or "purchase"
    event_id: str
    person_id: str
    offset_s: float  # planned event time, in seconds after the workload's start
    campaign_id: str = ""  # clicks only
    amount: str = ""  # purchases only


@dataclass
class Workload:
    """The planned events and the expected last-touch result per campaign."""

    items: list[Planned]
    span_s: float
    expected_conversions: Counter[str] = field(default_factory=Counter)
    expected_revenue: dict[str, Decimal] = field(default_factory=dict)

    @property
    def purchases(self) -> int:
        return sum(1 for item in self.items if item.kind == "purchase")

    @property
    def clicks(self) -> int:
        return sum(1 for item in self.items if item.kind == "click")


def plan_workload(
    events: int,
    campaigns: list[str],
    person_partitions: int,
    seed: int = 7,
    span_s: float = 3600.0,
) -> Workload:
    """Plan about ``events`` events spread over ``span_s`` seconds of event time.

    After the last planned event comes one closing click per person partition,
    ``CLOSING_GAP_S`` later, so the settle rule releases every purchase without
    waiting for the idle release. The closing clicks count as events.
    """
    if events < 10:
        raise ValueError(f"events must be at least 10, got {events}")
    if not campaigns:
        raise ValueError("campaigns is empty; pass at least one campaign id")
    rng = random.Random(seed)
    # Weighted like real campaigns: a few large ones and a long tail.
    weights = [1.0 / (rank + 1) for rank in range(len(campaigns))]
    items: list[Planned] = []
    conversions: Counter[str] = Counter()
    revenue: dict[str, Decimal] = {}
    budget = events - person_partitions
    person_number = 0
    while len(items) < budget:
        person_number += 1
        person_id = f"u-{seed:02d}{person_number:010d}"
        at_s = rng.uniform(0.0, span_s)
        last_campaign = ""
        for click_number in range(rng.randint(MIN_CLICKS_PER_PERSON, MAX_CLICKS_PER_PERSON)):
            if click_number:
                at_s += rng.uniform(*CLICK_GAP_S)
            last_campaign = rng.choices(campaigns, weights)[0]
            items.append(Planned("click", _event_id(rng, "c"), person_id, at_s, campaign_id=last_campaign))
        if rng.random() < PURCHASE_PROBABILITY:
            at_s += rng.uniform(*PURCHASE_DELAY_S)
            amount = Decimal(rng.randint(500, 25_000)).scaleb(-2)
            items.append(Planned("purchase", _event_id(rng, "p"), person_id, at_s, amount=str(amount)))
            conversions[last_campaign] += 1
            revenue[last_campaign] = revenue.get(last_campaign, Decimal(0)) + amount
    items.sort(key=lambda item: item.offset_s)
    end_s = items[-1].offset_s + CLOSING_GAP_S
    for person_id in closing_people(person_partitions, seed):
        items.append(Planned("click", _event_id(rng, "c"), person_id, end_s, campaign_id=campaigns[0]))
    return Workload(items, end_s, conversions, revenue)


def closing_people(person_partitions: int, seed: int) -> list[str]:
    """Return one person id per person partition, in partition order."""
    found: dict[int, str] = {}
    number = 0
    while len(found) < person_partitions:
        person_id = f"closing-{seed:02d}-{number}"
        found.setdefault(partition_for_key(person_id.encode(), person_partitions), person_id)
        number += 1
    return [found[partition] for partition in range(person_partitions)]


def _event_id(rng: random.Random, prefix: str) -> str:
    # 32 hex digits, as long as the UUIDs that browser and app SDKs send.
    return f"{prefix}-{uuid.UUID(int=rng.getrandbits(128)).hex}"


def iso_time(epoch_s: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with milliseconds and a Z suffix."""
    moment = datetime.fromtimestamp(round(epoch_s, 3), tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_json(item: Planned, epoch_s: float) -> dict[str, Any]:
    """Return the wire form of one planned event at the given event time."""
    if item.kind == "click":
        return {
            "type": "click", "event_id": item.event_id, "event_time": iso_time(epoch_s),
            "user_id": item.person_id, "campaign_id": item.campaign_id, "channel": item.campaign_id,
        }
    return {
        "type": "purchase", "event_id": item.event_id, "event_time": iso_time(epoch_s),
        "user_id": item.person_id, "order_id": "o" + item.event_id[1:], "amount": item.amount, "currency": "EUR",
    }


def backlog_events(workload: Workload, start_epoch_s: float) -> Iterator[tuple[bytes, Any]]:
    """Yield (raw JSON, event) pairs with planned event times from ``start_epoch_s`` on."""
    for item in workload.items:
        event = event_json(item, start_epoch_s + item.offset_s)
        yield orjson.dumps(event), event
