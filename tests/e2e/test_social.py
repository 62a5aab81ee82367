"""Group-buy deals and advocate rewards through the real broker, Redis and worker process.

Each test runs its own worker on its own topics and Redis namespace, because
a deal's deadline is compared with its campaign partition's event time, which
other tests' traffic would move.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer

from roitrack.settings import Settings
from roitrack.topics import create_topics
from streams.state import Keys, partition_for_key
from tests.harness import (
    WorkerProcess,
    latest_by_campaign,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

T0 = "2026-11-10T10:00:00Z"
PRICE = "15"


def at(minute: int) -> str:
    """Event time ``minute`` minutes after 2026-11-10T10:00Z."""
    hour, rest = divmod(minute, 60)
    return f"2026-11-10T{10 + hour:02d}:{rest:02d}:00Z"


@pytest.fixture
def social_settings(kafka_bootstrap: str, redis_url: str) -> Iterator[Settings]:
    settings = unique_settings(kafka_bootstrap, redis_url, deal_expiry_grace_s=60, referral_code_wait_s=60.0,
                               progress_interval_s=1.0)
    create_topics(settings, kafka_bootstrap)
    yield settings
    from tests.conftest import _delete_namespace

    _delete_namespace(settings.redis_url, settings.redis_namespace)


@pytest.fixture
def worker(social_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(social_settings, tmp_path).start()
    try:
        yield process
    finally:
        if process.running:
            assert process.stop() == 0, process.log_tail()
        assert "Traceback" not in process.log_text(), process.log_text()[-4000:]


def people_on_partitions(prefix: str, settings: Settings, count: int) -> list[str]:
    """Return ``count`` person ids whose touchpoints and conversions go to distinct partitions, as far as there are partitions."""
    found: dict[int, str] = {}
    extra: list[str] = []
    index = 0
    while len(found) + len(extra) < count:
        person = f"{prefix}-{uuid.uuid4().hex[:6]}-{index}"
        partition = partition_for_key(person.encode(), settings.person_partitions)
        if partition not in found:
            found[partition] = person
        elif len(found) == settings.person_partitions:
            extra.append(person)
        index += 1
    return list(found.values()) + extra


def campaign_event(campaign: str) -> dict[str, Any]:
    return {"type": "campaign", "campaign_id": campaign, "name": f"Campaign {campaign}", "channel": "instagram",
            "start": "2026-11-01T00:00:00Z", "margin": "0.5"}


def deal_event(deal: str, campaign: str, threshold: int, deadline: str) -> dict[str, Any]:
    return {"type": "deal", "deal_id": deal, "campaign_id": campaign, "name": f"Deal {deal}", "price": PRICE,
            "currency": "EUR", "threshold": threshold, "deadline": deadline}


def share(person: str, campaign: str, deal: str, code: str, minute: int) -> dict[str, Any]:
    return {"type": "touch", "kind": "share", "event_id": f"share-{person}-{code}", "event_time": at(minute),
            "user_id": person, "campaign_id": campaign, "channel": "instagram", "referral_code": code, "deal_id": deal}


def deal_purchase(person: str, deal: str, minute: int, amount: str = PRICE, code: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "purchase", "event_id": f"buy-{person}-{deal}-{minute}", "event_time": at(minute), "user_id": person,
        "order_id": f"order-{person}-{deal}-{minute}", "amount": amount, "currency": "EUR", "deal_id": deal,
    }
    if code is not None:
        event["referral_code"] = code
    return event


def send_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Produce events to their topics in one go, keyed as the collector keys them."""
    messages = []
    for event in events:
        if event["type"] in ("campaign", "deal"):
            messages.append((settings.topic_campaigns, event["campaign_id"].encode(), orjson.dumps(event)))
        elif event["type"] == "purchase":
            messages.append((settings.topic_conversions, event["user_id"].encode(), orjson.dumps(event)))
        else:
            messages.append((settings.topic_touchpoints, event["user_id"].encode(), orjson.dumps(event)))
    produce(settings, messages)


def define_deal(settings: Settings, worker: WorkerProcess, campaign: str, deal: str, threshold: int, deadline: str) -> None:
    """Define the campaign and the deal, and wait until person partitions can look the deal up."""
    send_events(settings, [campaign_event(campaign), deal_event(deal, campaign, threshold, deadline)])
    client = redis.Redis.from_url(settings.redis_url)
    try:
        wait_for(lambda: client.hget(Keys(settings.redis_namespace).deals(), deal) is not None, 60,
                 f"deal {deal} in the deal map", worker)
    finally:
        client.close()


def deal_events(settings: Settings, event_type: str, deal: str) -> list[dict[str, Any]]:
    return [event for event in read_topic(settings, settings.topic_deal_events, idle_s=0.5, max_wait_s=20)
            if event["type"] == event_type and event["deal_id"] == deal]


def lifetime_update(settings: Settings, campaign: str) -> dict[str, Any] | None:
    return latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=0.5, max_wait_s=20)).get(campaign)


def deal_figures(update: dict[str, Any] | None, deal: str) -> dict[str, Any] | None:
    if update is None or not update.get("deals"):
        return None
    return next((figures for figures in update["deals"] if figures["deal_id"] == deal), None)


def wait_for_deal(settings: Settings, worker: WorkerProcess, campaign: str, deal: str, what: str,
                  check: Any) -> dict[str, Any]:
    """Wait until the campaign's lifetime update shows the deal in a state ``check`` accepts; return the update."""
    found: dict[str, Any] = {}

    def reached() -> bool:
        update = lifetime_update(settings, campaign)
        figures = deal_figures(update, deal)
        if update is None or figures is None or not check(figures):
            return False
        found.update(update)
        return True

    wait_for(reached, 120, what, worker)
    return found


def test_deal_activates_once_across_partitions(social_settings: Settings, worker: WorkerProcess) -> None:
    settings = social_settings
    campaign, deal = f"camp-{uuid.uuid4().hex[:6]}", f"deal-{uuid.uuid4().hex[:6]}"
    define_deal(settings, worker, campaign, deal, threshold=4, deadline=at(120))
    buyers = people_on_partitions("buyer", settings, 6)

    send_events(settings, [deal_purchase(buyers[0], deal, 5), deal_purchase(buyers[1], deal, 6)])
    wait_for_deal(settings, worker, campaign, deal, "two pending purchases",
                  lambda figures: figures["pending_purchases"] == 2)
    assert deal_events(settings, "deal_activated", deal) == []

    # The purchases that cross the threshold arrive together, from persons on
    # different partitions, each produced twice.
    crossing = [deal_purchase(buyer, deal, 10 + index) for index, buyer in enumerate(buyers[2:])]
    send_events(settings, crossing + crossing)

    update = wait_for_deal(settings, worker, campaign, deal, "all six purchases counted",
                           lambda figures: figures["purchases"] == 6)
    activated = deal_events(settings, "deal_activated", deal)
    assert len(activated) == 1
    event = activated[0]
    assert event["threshold"] == 4
    # The crossing buyer is the fourth in event time among those counted when the
    # deal activated, so it depends on which partitions were processed first.
    crossing_times = {purchase["event_time"].replace(":00Z", ":00.000Z") for purchase in crossing}
    assert event["activated_at"] in crossing_times
    assert event["activated_at"] >= "2026-11-10T10:11:00.000Z"
    assert Decimal(event["revenue"]) == Decimal(PRICE) * event["purchases"]
    figures = deal_figures(update, deal)
    assert figures is not None
    assert (figures["status"], figures["buyers"], figures["pending_purchases"]) == ("active", 6, 0)
    assert Decimal(figures["revenue"]) == Decimal(PRICE) * 6
    assert Decimal(update["models"]["last_touch"]["revenue"]) == Decimal(PRICE) * 6
    assert Decimal(update["models"]["last_touch"]["conversions"]) == 6
    assert deal_events(settings, "deal_expired", deal) == []


def test_expired_deal_reports_refunds(social_settings: Settings, worker: WorkerProcess) -> None:
    settings = social_settings
    campaign, deal = f"camp-{uuid.uuid4().hex[:6]}", f"deal-{uuid.uuid4().hex[:6]}"
    define_deal(settings, worker, campaign, deal, threshold=5, deadline=at(60))
    buyers = people_on_partitions("buyer", settings, 2)
    send_events(settings, [deal_purchase(buyers[0], deal, 5, "15"), deal_purchase(buyers[1], deal, 20, "12.5")])
    wait_for_deal(settings, worker, campaign, deal, "two pending purchases",
                  lambda figures: figures["pending_purchases"] == 2)
    assert deal_events(settings, "deal_expired", deal) == []

    # A like three hours later moves the campaign partition past the deadline and its grace.
    liker = people_on_partitions("liker", settings, 1)[0]
    send_events(settings, [{"type": "touch", "kind": "like", "event_id": f"like-{liker}", "event_time": at(180),
                            "user_id": liker, "campaign_id": campaign, "channel": "tiktok"}])

    update = wait_for_deal(settings, worker, campaign, deal, "the deal to expire",
                           lambda figures: figures["status"] == "expired")
    expired = deal_events(settings, "deal_expired", deal)
    assert len(expired) == 1
    refunds = expired[0]["refunds"]
    assert sorted(refund["person_id"] for refund in refunds) == sorted(buyers)
    assert Decimal(expired[0]["refunded_amount"]) == Decimal("27.5")
    figures = deal_figures(update, deal)
    assert figures is not None
    assert (figures["refunds"], Decimal(figures["refunded_amount"]), figures["purchases"]) == (2, Decimal("27.5"), 0)
    assert Decimal(update["models"]["last_touch"]["revenue"]) == 0
    assert deal_events(settings, "deal_activated", deal) == []


class BusyPartitions:
    """Keep person partitions busy with clicks at early event times, from a thread, until stopped."""

    def __init__(self, settings: Settings, people: list[str], campaign: str) -> None:
        self.settings, self.people, self.campaign = settings, people, campaign
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-partitions", daemon=True)

    def __enter__(self) -> "BusyPartitions":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5)
        try:
            while not self._stop.is_set():
                for person in self.people:
                    # Clicks one second apart from 10:00, far before the deadline.
                    click = {"type": "click", "event_id": f"busy-{person}-{self.sent}", "user_id": person,
                             "event_time": f"2026-11-10T10:{self.sent // 60 % 60:02d}:{self.sent % 60:02d}Z",
                             "campaign_id": self.campaign, "channel": "instagram"}
                    producer.send(self.settings.topic_touchpoints, key=person.encode(), value=orjson.dumps(click))
                producer.flush()
                self.sent += 1
                self._stop.wait(0.3)
        finally:
            producer.close()


def test_deal_waits_for_slow_partition(
    social_settings: Settings, worker: WorkerProcess,
) -> None:
    """A partition hours ahead in event time does not expire a deal whose buyers are on a partition behind it."""
    settings = social_settings
    campaign, deal = f"camp-{uuid.uuid4().hex[:6]}", f"deal-{uuid.uuid4().hex[:6]}"
    define_deal(settings, worker, campaign, deal, threshold=2, deadline=at(60))
    fast, slow_a, slow_b = people_on_partitions("person", settings, 3)

    with BusyPartitions(settings, [slow_a, slow_b], campaign) as busy:
        # The slow partitions report progress that is not idle before the fast one moves on.
        wait_for(lambda: busy.sent >= 15, 60, "busy clicks on the slow partitions", worker)
        send_events(settings, [{"type": "touch", "kind": "like", "event_id": f"like-{fast}", "event_time": at(600),
                                "user_id": fast, "campaign_id": campaign, "channel": "tiktok"}])

        def like_counted() -> bool:
            update = lifetime_update(settings, campaign)
            engagement = (update or {}).get("engagement") or {}
            return bool(engagement.get("engagements", {}).get("like") == 1)

        wait_for(like_counted, 120, "the like ten hours later counted", worker)
        time.sleep(2 * settings.progress_interval_s + 1)  # the fast partition's progress reaches the campaign
        assert deal_events(settings, "deal_expired", deal) == []

        # The buyers bought at 10:00:05 and 10:00:06, before the busy clicks' latest event
        # times, so their partitions' watermarks are past the settle delay already.
        purchases = [deal_purchase(slow_a, deal, 0), deal_purchase(slow_b, deal, 0)]
        for purchase, second in zip(purchases, (5, 6)):
            purchase["event_time"] = f"2026-11-10T10:00:{second:02d}Z"
        send_events(settings, purchases)
        update = wait_for_deal(settings, worker, campaign, deal, "activation by the slow partitions' buyers",
                               lambda figures: figures["status"] == "active")

    figures = deal_figures(update, deal)
    assert figures is not None
    assert (figures["purchases"], figures["refunds"]) == (2, 0)
    assert len(deal_events(settings, "deal_activated", deal)) == 1
    assert deal_events(settings, "deal_expired", deal) == []


def test_advocate_rewarded_once_never_for_self(social_settings: Settings, worker: WorkerProcess) -> None:
    settings = social_settings
    campaign, deal = f"camp-{uuid.uuid4().hex[:6]}", f"deal-{uuid.uuid4().hex[:6]}"
    define_deal(settings, worker, campaign, deal, threshold=2, deadline=at(240))
    ann, eve = people_on_partitions("advocate", settings, 2)
    friends = people_on_partitions("friend", settings, 4)
    ann_code, eve_code = f"ANN-{uuid.uuid4().hex[:6]}", f"EVE-{uuid.uuid4().hex[:6]}"
    send_events(settings, [share(ann, campaign, deal, ann_code, 1), share(eve, campaign, deal, eve_code, 1)])

    # Eve buys through her own code, and Ann does too: both are self-referrals.
    # Two friends buy through Ann's code: the deal activates, but Ann has two converted shares.
    send_events(settings, [
        deal_purchase(eve, deal, 10, code=eve_code),
        deal_purchase(ann, deal, 11, code=ann_code),
        deal_purchase(friends[0], deal, 12, code=ann_code),
        deal_purchase(friends[1], deal, 13, code=ann_code),
    ])
    wait_for_deal(settings, worker, campaign, deal, "four purchases counted", lambda figures: figures["purchases"] == 4)
    assert deal_events(settings, "advocate_reward", deal) == []

    # The third friend clicks Ann's link and later buys without the code: the third converted share.
    third = friends[2]
    send_events(settings, [{"type": "click", "event_id": f"click-{third}", "event_time": at(20), "user_id": third,
                            "campaign_id": campaign, "channel": "instagram", "referral_code": ann_code}])
    send_events(settings, [deal_purchase(third, deal, 30)])
    wait_for_deal(settings, worker, campaign, deal, "Ann's reward", lambda figures: figures["rewards"] == 1)

    # A fourth friend's purchase through Ann's code earns no second reward.
    send_events(settings, [deal_purchase(friends[3], deal, 40, code=ann_code)])
    wait_for_deal(settings, worker, campaign, deal, "six purchases counted", lambda figures: figures["purchases"] == 6)
    # The referral of that purchase is decided apart from its credit, so it may come later.
    latest: dict[str, Any] = {}

    def fourth_referral() -> bool:
        latest.update(lifetime_update(settings, campaign) or {})
        return bool(latest.get("referrals")) and latest["referrals"]["purchases"] == 3

    wait_for(fourth_referral, 60, "the fourth friend's referral", worker)
    update = latest

    rewards = deal_events(settings, "advocate_reward", deal)
    assert [reward["advocate_id"] for reward in rewards] == [ann]
    assert rewards[0]["referred_buyers"] == friends[:3]
    assert Decimal(rewards[0]["reward"]) == Decimal(PRICE)
    assert Decimal(update["spend"]) == Decimal(PRICE), "the free deal counts as campaign spend"
    referrals = update["referrals"]
    assert referrals["self_referrals_rejected"] == 2
    assert referrals["referred_people"] == 4
    assert referrals["purchases"] == 3
    assert referrals["clicks"] == 1
    assert [advocate["advocate_id"] for advocate in referrals["top_advocates"]] == [ann]
    assert referrals["top_advocates"][0]["new_customers"] == 4

    # Each buyer's referral state expires ROITRACK_REFERRAL_STATE_TTL_S after their last decision.
    keys = Keys(settings.redis_namespace)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for buyer in friends:
            key = keys.person_referrals(partition_for_key(buyer.encode(), settings.person_partitions), buyer)
            assert client.hget(key, "first") is not None, key
            assert 0 < client.pttl(key) <= settings.referral_state_ttl_s * 1000, key
    finally:
        client.close()


def test_restart_emits_deal_events_once(social_settings: Settings, tmp_path: Path) -> None:
    settings = social_settings
    campaign, deal = f"camp-{uuid.uuid4().hex[:6]}", f"deal-{uuid.uuid4().hex[:6]}"
    buyers = people_on_partitions("buyer", settings, 4)
    first = WorkerProcess(settings, tmp_path, "first").start()
    try:
        define_deal(settings, first, campaign, deal, threshold=3, deadline=at(120))
        send_events(settings, [deal_purchase(buyers[0], deal, 5), deal_purchase(buyers[1], deal, 6)])
        wait_for_deal(settings, first, campaign, deal, "two pending purchases",
                      lambda figures: figures["pending_purchases"] == 2)
        assert first.stop() == 0, first.log_tail()
    finally:
        first.kill()

    second = WorkerProcess(settings, tmp_path, "second").start()
    try:
        crossing = deal_purchase(buyers[2], deal, 7)
        send_events(settings, [crossing, crossing, deal_purchase(buyers[0], deal, 5)])
        wait_for_deal(settings, second, campaign, deal, "activation", lambda figures: figures["status"] == "active")
        assert second.stop() == 0, second.log_tail()
    finally:
        second.kill()

    third = WorkerProcess(settings, tmp_path, "third").start()
    try:
        send_events(settings, [deal_purchase(buyers[3], deal, 8)])
        update = wait_for_deal(settings, third, campaign, deal, "four purchases counted",
                               lambda figures: figures["purchases"] == 4)
        assert third.stop() == 0, third.log_tail()
    finally:
        third.kill()

    assert len(deal_events(settings, "deal_activated", deal)) == 1
    assert Decimal(update["models"]["last_touch"]["revenue"]) == Decimal(PRICE) * 4
    for process in (first, second, third):
        assert "Traceback" not in process.log_text(), process.log_text()[-4000:]
