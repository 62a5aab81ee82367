"""Synthetic live traffic for the soak benchmark: visitors who touch campaigns and sometimes buy.

Each event is stamped with the generator's clock when it is emitted, so with the
wall clock as the clock the worker's event-time watermarks and Redis' wall-clock
expiry move together. A visitor session is one to four touchpoints a few seconds
apart. Some sessions end in a purchase some seconds after the last touchpoint,
and an anonymous visitor who buys first sends an ``identify`` event that links
the anonymous id to a new user id. A small share of purchases is sent a second
time with the same event id, which the worker must count as duplicates.

New visitors keep arriving with new ids, so touchpoint keys of visitors who do not
return expire in Redis after the lookback window. Some sessions come from
visitors seen recently, so part of the keys is updated and trimmed instead.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

#: Distinct /24 networks that visitors' addresses are spread over. Clicks that
#: carry an address are counted per /24 network and flood window, so the
#: networks must be many enough that no network reaches ROITRACK_FLOOD_MAX_CLICKS.
ADDRESS_NETWORKS = 65_536


@dataclass(frozen=True)
class TrafficMix:
    """Shares and delays of the synthetic sessions; delays are in seconds."""

    max_touches_per_session: int = 4
    touch_gap_s: tuple[float, float] = (1.0, 15.0)
    purchase_share: float = 0.15
    purchase_delay_s: tuple[float, float] = (5.0, 40.0)
    anonymous_share: float = 0.2
    returning_share: float = 0.25
    recent_visitors: int = 20_000
    resend_share: float = 0.01
    resend_delay_s: tuple[float, float] = (1.0, 10.0)
    coupon_share: float = 0.05
    view_share: float = 0.25
    like_share: float = 0.05


@dataclass
class TrafficCounts:
    """Events emitted so far, by what the worker should do with them."""

    events: int = 0
    touches: int = 0
    identifies: int = 0
    purchases: int = 0
    resends: int = 0


@dataclass
class Visitor:
    number: int
    anonymous_id: str | None
    user_id: str | None
    ip: str

    @property
    def key_fields(self) -> dict[str, str]:
        """The id fields of a touchpoint: the user id once known, else the anonymous id."""
        if self.user_id is not None:
            return {"user_id": self.user_id}
        assert self.anonymous_id is not None
        return {"anonymous_id": self.anonymous_id}


@dataclass(order=True)
class _Scheduled:
    due_s: float
    sequence: int
    event: dict[str, Any] = field(compare=False)
    resend: bool = field(compare=False, default=False)


def iso_time(epoch_s: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    moment = datetime.fromtimestamp(epoch_s, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def campaign_events(run_id: str, count: int, now_s: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Build ``count`` campaign definitions with spend around ``now_s``; return them and the coupon map.

    Each campaign runs from one day before ``now_s`` to one day after it, spends
    1,000 EUR evenly over that period, and has one coupon code.
    """
    start = datetime.fromtimestamp(now_s, timezone.utc) - timedelta(days=1)
    end = start + timedelta(days=2)
    events: list[dict[str, Any]] = []
    coupons: dict[str, str] = {}
    for index in range(1, count + 1):
        campaign_id = f"soak-{index:02d}"
        coupon = f"SOAK{index:02d}-{run_id}"
        coupons[coupon] = campaign_id
        events.append({
            "type": "campaign", "campaign_id": campaign_id, "name": f"Soak campaign {index}",
            "channel": ("instagram", "tiktok", "facebook", "youtube")[index % 4],
            "start": iso_time(start.timestamp()), "end": iso_time(end.timestamp()),
            "margin": "0.35", "coupon_codes": [coupon],
        })
        events.append({
            "type": "spend", "spend_id": f"{campaign_id}-{run_id}", "campaign_id": campaign_id,
            "amount": "1000.00", "currency": "EUR",
            "period_start": iso_time(start.timestamp()), "period_end": iso_time(end.timestamp()),
        })
    return events, coupons


class LiveTraffic:
    """An endless stream of visitor events for ``roitrack.replay.Replayer``.

    ``events()`` emits the next follow-up event whose due time has come, else the
    first event of a new session, so the caller's pace sets the event rate.
    Counts and the pending follow-ups are kept between calls, so one instance can
    feed several ``Replayer.replay`` calls.
    """

    def __init__(
        self,
        run_id: str,
        campaigns: Sequence[str],
        coupons: Sequence[str],
        *,
        seed: int,
        clock: Callable[[], float] = time.time,
        mix: TrafficMix = TrafficMix(),
    ) -> None:
        if not campaigns:
            raise ValueError("campaigns is empty; pass at least one campaign id")
        self.run_id = run_id
        self.campaigns = tuple(campaigns)
        self.coupons = tuple(coupons)
        self.mix = mix
        self.counts = TrafficCounts()
        self._clock = clock
        self._random = random.Random(seed)
        self._due: list[_Scheduled] = []
        self._recent: deque[Visitor] = deque(maxlen=mix.recent_visitors)
        self._sequence = itertools.count()
        self._visitors = itertools.count()
        self._ids = itertools.count()

    @property
    def scheduled(self) -> int:
        """Follow-up events waiting for their due time."""
        return len(self._due)

    def events(self, stop: Callable[[], bool]) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Yield (JSON bytes, event) pairs until ``stop()`` returns True."""
        while not stop():
            now_s = self._clock()
            if self._due and self._due[0].due_s <= now_s:
                item = heapq.heappop(self._due)
                event = item.event
                if not item.resend:
                    event["event_time"] = iso_time(now_s)
                self._count(event, resend=item.resend)
                if event["type"] == "purchase" and not item.resend:
                    self._maybe_resend(event, now_s)
            else:
                event = self._start_session(now_s)
                self._count(event, resend=False)
            yield orjson.dumps(event), event

    def _count(self, event: dict[str, Any], *, resend: bool) -> None:
        counts = self.counts
        counts.events += 1
        kind = event["type"]
        if kind == "purchase":
            if resend:
                counts.resends += 1
            else:
                counts.purchases += 1
        elif kind == "identify":
            counts.identifies += 1
        else:
            counts.touches += 1

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{self.run_id}-{next(self._ids)}"

    def _schedule(self, due_s: float, event: dict[str, Any], *, resend: bool = False) -> None:
        heapq.heappush(self._due, _Scheduled(due_s, next(self._sequence), event, resend))

    def _visitor(self) -> Visitor:
        if self._recent and self._random.random() < self.mix.returning_share:
            return self._random.choice(self._recent)
        number = next(self._visitors)
        network = number % ADDRESS_NETWORKS
        ip = f"10.{network >> 8}.{network & 255}.{self._random.randint(1, 254)}"
        if self._random.random() < self.mix.anonymous_share:
            visitor = Visitor(number, anonymous_id=f"anon-{self.run_id}-{number}", user_id=None, ip=ip)
        else:
            visitor = Visitor(number, anonymous_id=None, user_id=f"user-{self.run_id}-{number}", ip=ip)
        self._recent.append(visitor)
        return visitor

    def _touch(self, visitor: Visitor) -> dict[str, Any]:
        campaign = self._random.choice(self.campaigns)
        roll = self._random.random()
        event: dict[str, Any]
        if roll < self.mix.view_share:
            event = {"type": "touch", "kind": "view", "channel": "tiktok"}
        elif roll < self.mix.view_share + self.mix.like_share:
            event = {"type": "touch", "kind": "like", "channel": "instagram"}
        else:
            event = {"type": "click", "channel": "instagram", "ip": visitor.ip,
                     "utm_source": "instagram", "utm_medium": "social"}
        event.update(event_id=self._next_id("tp"), campaign_id=campaign, source="soak", **visitor.key_fields)
        return event

    def _start_session(self, now_s: float) -> dict[str, Any]:
        """Return the session's first touchpoint and schedule the rest of the session."""
        visitor = self._visitor()
        first = self._touch(visitor)
        first["event_time"] = iso_time(now_s)
        due_s = now_s
        for _ in range(self._random.randint(1, self.mix.max_touches_per_session) - 1):
            due_s += self._random.uniform(*self.mix.touch_gap_s)
            self._schedule(due_s, self._touch(visitor))
        if self._random.random() < self.mix.purchase_share:
            self._schedule_purchase(visitor, due_s + self._random.uniform(*self.mix.purchase_delay_s))
        return first

    def _schedule_purchase(self, visitor: Visitor, due_s: float) -> None:
        if visitor.user_id is None:
            # The visitor logs in before buying: link the anonymous id to a new user id.
            visitor.user_id = f"user-{self.run_id}-{visitor.number}"
            self._schedule(due_s - 0.5, {
                "type": "identify", "event_id": self._next_id("id"), "user_id": visitor.user_id,
                "anonymous_id": visitor.anonymous_id, "source": "soak",
            })
        cents = self._random.randint(500, 25_000)
        purchase: dict[str, Any] = {
            "type": "purchase", "event_id": self._next_id("buy"), "order_id": self._next_id("order"),
            "amount": f"{cents // 100}.{cents % 100:02d}", "currency": "EUR", "source": "soak",
            **visitor.key_fields,
        }
        if self.coupons and self._random.random() < self.mix.coupon_share:
            purchase["coupon_code"] = self._random.choice(self.coupons)
        self._schedule(due_s, purchase)

    def _maybe_resend(self, purchase: dict[str, Any], now_s: float) -> None:
        if self._random.random() < self.mix.resend_share:
            self._schedule(now_s + self._random.uniform(*self.mix.resend_delay_s), dict(purchase), resend=True)
