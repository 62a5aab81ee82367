"""Redis reads behind the query API.

The reads use the state that the agents write (see streams/state.py for the
key layout), never a worker's in-memory cache, so every worker serves queries
about partitions that another worker owns. Each request costs one or two
pipelined round trips.
"""

from __future__ import annotations

from typing import Any

import orjson

from roitrack.roi import CampaignAggregate, window_label
from roitrack.settings import Settings
from streams.crediting import decode_touch
from streams.records import iso_ms
from streams.roi_agent import WATERMARK_FIELD, window_figures
from streams.state import StateStore, partition_for_key


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def list_campaigns(store: StateStore, settings: Settings) -> list[dict[str, Any]]:
    """Return id, name, channel and partition of every campaign, sorted by id.

    NOTE: names and channels live inside the whole aggregate, so this reads
    every aggregate (a few kB each, with its window buckets). That is fine for
    thousands of campaigns; far more would need a separate name index.
    """
    keys = store.keys
    pipe = store.client.pipeline(transaction=False)
    for partition in range(settings.campaign_partitions):
        pipe.smembers(keys.campaign_index(partition))
    with store.metrics.redis("api_read"):
        index_sets = await pipe.execute()
    found = sorted(
        (_text(member), partition) for partition, members in enumerate(index_sets) for member in members
    )
    if not found:
        return []
    pipe = store.client.pipeline(transaction=False)
    for campaign_id, partition in found:
        pipe.get(keys.campaign(partition, campaign_id))
    with store.metrics.redis("api_read"):
        raws = await pipe.execute()
    campaigns = []
    for (campaign_id, partition), raw in zip(found, raws):
        data = orjson.loads(raw) if raw else {}
        campaigns.append({
            "campaign_id": campaign_id,
            "name": data.get("name"),
            "channel": data.get("channel"),
            "partition": partition,
        })
    return campaigns


async def campaign_roi(
    store: StateStore, settings: Settings, campaign_id: str, windows: list[int | None], model: str | None,
) -> dict[str, Any] | None:
    """Return a campaign's figures per window, as its RoiUpdates carry them, or None when unknown.

    The campaign is looked up in every campaign partition's index, so one
    produced with another partitioner is found too. Rolling windows end at the
    partition's watermark, as in the ROI agent. ``model`` limits ``models`` to
    one attribution model; the top-level figures stay those of the default model.
    """
    keys = store.keys
    pipe = store.client.pipeline(transaction=False)
    for partition in range(settings.campaign_partitions):
        pipe.sismember(keys.campaign_index(partition), campaign_id)
    with store.metrics.redis("api_read"):
        memberships = await pipe.execute()
    owner = next((index for index, member in enumerate(memberships) if member), None)
    if owner is None:
        return None
    partition = owner
    pipe = store.client.pipeline(transaction=False)
    pipe.get(keys.campaign(partition, campaign_id))
    pipe.hget(keys.offsets(keys.campaign_tag(partition)), WATERMARK_FIELD)
    pipe.hget(keys.sequences(partition), campaign_id)
    with store.metrics.redis("api_read"):
        raw, watermark, sequence = await pipe.execute()
    if not raw:
        return None
    aggregate = CampaignAggregate.from_json(orjson.loads(raw))
    watermark_ms = int(watermark) if watermark is not None else 0
    reports = []
    for window_s in windows:
        figures = window_figures(aggregate, window_s, watermark_ms)
        if model is not None:
            figures["models"] = {model: figures["models"][model]}
        reports.append(figures)
    return {
        "campaign_id": campaign_id,
        "campaign_name": aggregate.name,
        "channel": aggregate.channel,
        "currency": settings.reporting_currency,
        "margin": None if aggregate.margin is None else format(aggregate.margin, "f"),
        "sequence": int(sequence) if sequence is not None else None,
        "windows": reports,
    }


async def order_attributions(
    store: StateStore, settings: Settings, order_id: str, person_id: str | None,
) -> list[dict[str, Any]]:
    """Return the indexed attributions of an order id, oldest conversion first.

    Without ``person_id`` every person partition is read in one pipeline,
    because the index key carries the person's partition and the order id
    alone does not give it.
    """
    keys = store.keys
    if person_id is not None:
        partitions = [partition_for_key(person_id.encode(), settings.person_partitions)]
    else:
        partitions = list(range(settings.person_partitions))
    pipe = store.client.pipeline(transaction=False)
    for partition in partitions:
        pipe.hgetall(keys.order_attributions(partition, order_id))
    with store.metrics.redis("api_read"):
        hashes = await pipe.execute()
    attributions = [orjson.loads(value) for entries in hashes for value in entries.values()]
    if person_id is not None:
        attributions = [item for item in attributions if item.get("person_id") == person_id]
    attributions.sort(key=lambda item: (item["event_time"], item["conversion_id"]))
    return attributions


async def person_touchpoints(store: StateStore, settings: Settings, person_id: str, limit: int) -> dict[str, Any]:
    """Return a person's newest stored touchpoints, their own and those of linked anonymous ids.

    Redis stores only the event id, campaign id, touch class and time of a
    touchpoint, so nothing personal beyond the ids can be returned. Linked
    anonymous ids are counted, never returned.
    """
    keys = store.keys
    partition = partition_for_key(person_id.encode(), settings.person_partitions)
    with store.metrics.redis("api_read"):
        members = await store.client.smembers(keys.aliases(partition, person_id))
    linked = sorted({_text(member) for member in members} - {person_id})
    sources = [(keys.touchpoints(partition, person_id), False)]
    for anonymous_id in linked:
        alias_partition = partition_for_key(anonymous_id.encode(), settings.person_partitions)
        sources.append((keys.touchpoints(alias_partition, anonymous_id), True))
    pipe = store.client.pipeline(transaction=False)
    for key, _ in sources:
        pipe.zrevrange(key, 0, limit - 1, withscores=True)
    with store.metrics.redis("api_read"):
        results = await pipe.execute()
    found: dict[str, dict[str, Any]] = {}
    for (_, is_linked), entries in zip(sources, results):
        for member, score in entries:
            touch = decode_touch(member, score)
            found.setdefault(touch.event_id, {
                "event_id": touch.event_id,
                "campaign_id": touch.campaign_id,
                "touch_class": touch.touch_class,
                "event_time": iso_ms(touch.time_ms),
                "linked": is_linked,
                "_time_ms": touch.time_ms,
            })
    newest = sorted(found.values(), key=lambda item: (-item["_time_ms"], item["event_id"]))[:limit]
    for item in newest:
        del item["_time_ms"]
    return {"touchpoints": newest, "count": len(newest), "linked_ids": len(linked), "limit": limit}


def window_labels(settings: Settings) -> dict[str, int | None]:
    """Map each reported window label ('1h', ..., 'lifetime') to its length in seconds."""
    labels: dict[str, int | None] = {window_label(window_s): window_s for window_s in settings.roi_windows_s}
    labels[window_label(None)] = None
    return labels
