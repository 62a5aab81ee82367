"""The baseline: last-touch attribution written the naive Faust way, with default tables.

Usage: ``python -m bench.table_app RESULT_FILE EXPECTED_PURCHASES``, with the
ROITRACK_* variables set. Faust settings and the consumer transport are
roitrack's (``streams.app.create_faust_app``), except that the app may declare
topics, because its tables need changelog topics. Tables use Faust's default store
(``memory://``) and write every change to their changelog topic.

Agent ``bench.attribute`` reads the touchpoints and conversions topics one
event at a time. A click is appended to the person's entry in table
``touches``. A purchase waits in table ``pending`` until the partition's latest
click time is ``ROITRACK_CONVERSION_SETTLE_S`` past it, which is roitrack's
event-time settle rule. Without it most purchases of a backlog would be read
before their clicks. A released purchase credits the campaign of the person's
latest click inside ``ROITRACK_LOOKBACK_CLICK_S`` by sending a credit, keyed by
campaign, to the credits topic. Agent ``bench.campaigns`` adds each credit to
table ``totals`` (conversions and revenue per campaign).

Compared with roitrack it leaves out validation, privacy, deduplication,
traffic checks, the four other models, the idle release and the ROI output,
so it does less work per event. Once EXPECTED_PURCHASES purchases are
credited or found without a click, it writes its timings and totals to
RESULT_FILE. Before that, the file contains the time of the first event.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import faust
import orjson

from bench.procinfo import write_result
from bench.worker import configure_logging
from roitrack.settings import load_settings
from streams.app import create_faust_app


def _time_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.table_app RESULT_FILE EXPECTED_PURCHASES")
    result_path = Path(argv[0])
    expected_purchases = int(argv[1])
    configure_logging()
    settings = load_settings()
    app = create_faust_app(settings, topic_allow_declare=True)
    json_schema: faust.Schema[Any, Any] = faust.Schema(key_serializer="json", value_serializer="json")
    touches = app.Table("touches", default=list, partitions=settings.person_partitions, schema=json_schema)
    pending = app.Table("pending", default=list, partitions=settings.person_partitions, schema=json_schema)
    totals = app.Table("totals", default=dict, partitions=settings.campaign_partitions, schema=json_schema)
    person_topics = app.topic(settings.topic_touchpoints, settings.topic_conversions, key_type=bytes, value_type=bytes)
    credits_topic = app.topic(
        settings.topic_credits, key_type=bytes, value_type=bytes, partitions=settings.campaign_partitions
    )
    settle_ms = int(settings.conversion_settle_s * 1000)
    lookback_ms = settings.lookback_click_s * 1000
    # Per partition: the latest click time, and a heap of (purchase time, person) still pending.
    watermark_ms: dict[int, int] = defaultdict(int)
    waiting: dict[int, list[tuple[int, str]]] = defaultdict(list)
    counts = {"events": 0, "credited": 0, "unattributed": 0}
    first_event_s: list[float] = []
    finished: list[bool] = []

    async def credit(person_id: str, purchase: list[Any]) -> None:
        time_ms, event_id, amount = purchase
        eligible = [touch for touch in touches[person_id] if time_ms - lookback_ms <= touch[0] <= time_ms]
        if not eligible:
            counts["unattributed"] += 1
            return
        campaign_id = max(eligible)[1]
        value = {"conversion_id": event_id, "campaign_id": campaign_id, "revenue": amount}
        await credits_topic.send(key=campaign_id.encode(), value=orjson.dumps(value))

    async def release(partition: int) -> None:
        heap = waiting[partition]
        while heap and heap[0][0] + settle_ms <= watermark_ms[partition]:
            time_ms, person_id = heapq.heappop(heap)
            stored = pending[person_id]
            due = [purchase for purchase in stored if purchase[0] == time_ms]
            rest = [purchase for purchase in stored if purchase[0] != time_ms]
            if rest:
                pending[person_id] = rest
            elif person_id in pending:
                del pending[person_id]
            for purchase in due:
                await credit(person_id, purchase)

    @app.agent(person_topics, name="bench.attribute", concurrency=1)
    async def attribute(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if not first_event_s:
                first_event_s.append(time.time())
                write_result(result_path, {"first_s": first_event_s[0]})
            partition = event.message.partition
            value: Any = orjson.loads(event.message.value)
            for item in value if isinstance(value, list) else [value]:
                counts["events"] += 1
                person_id = item.get("user_id") or item["anonymous_id"]
                time_ms = _time_ms(item["event_time"])
                if item["type"] == "click":
                    stored = touches[person_id]
                    stored.append([time_ms, item["campaign_id"]])
                    touches[person_id] = stored
                    if time_ms > watermark_ms[partition]:
                        watermark_ms[partition] = time_ms
                        await release(partition)
                elif item["type"] == "purchase":
                    purchase = [time_ms, item["event_id"], item["amount"]]
                    if time_ms + settle_ms <= watermark_ms[partition]:
                        await credit(person_id, purchase)
                    else:
                        stored = pending[person_id]
                        stored.append(purchase)
                        pending[person_id] = stored
                        heapq.heappush(waiting[partition], (time_ms, person_id))
            _maybe_finish()

    @app.agent(credits_topic, name="bench.campaigns", concurrency=1)
    async def add_credits(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            credit_value = orjson.loads(event.message.value)
            campaign_id = credit_value["campaign_id"]
            total = totals[campaign_id]
            revenue = Decimal(total.get("revenue", "0")) + Decimal(credit_value["revenue"])
            totals[campaign_id] = {"conversions": total.get("conversions", 0) + 1, "revenue": str(revenue)}
            counts["credited"] += 1
            _maybe_finish()

    def _maybe_finish() -> None:
        if counts["credited"] + counts["unattributed"] < expected_purchases or finished:
            return
        finished.append(True)
        write_result(result_path, {
            "first_s": first_event_s[0], "last_s": time.time(), **counts,
            "conversions": {campaign: total["conversions"] for campaign, total in totals.items()},
        })

    worker = faust.Worker(app, loglevel="info", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
