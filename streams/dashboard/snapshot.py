"""Every campaign's current ROI figures, read from the aggregates in Redis.

The feed reads this once it is positioned at the end of ``roi-updates``. Each
campaign gets the sequence number of its latest publication, so that update,
if it is still on its way, is dropped as not newer, and the next one replaces
the figures read here. A campaign that was never published is left out: its
first update follows within ``ROITRACK_ROI_UPDATE_INTERVAL_S``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from roitrack.roi import CampaignAggregate
from roitrack.settings import Settings
from streams.records import Outgoing
from streams.roi_agent import WATERMARK_FIELD
from streams.state import StateStore

#: Builds a campaign's RoiUpdates from its aggregate, sequence and window end (ms): RoiProcessor.roi_updates.
BuildUpdates = Callable[[CampaignAggregate, int, int], Sequence[Outgoing]]


async def read_snapshot(settings: Settings, store: StateStore, build: BuildUpdates) -> list[dict[str, Any]]:
    """Return the RoiUpdate values of every published campaign, over all campaign partitions."""
    keys = store.keys
    client = store.client
    values: list[dict[str, Any]] = []
    for partition in range(settings.campaign_partitions):
        members = await client.smembers(keys.campaign_index(partition))
        campaign_ids = sorted(_text(member) for member in members)
        if not campaign_ids:
            continue
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.offsets(keys.campaign_tag(partition)), WATERMARK_FIELD)
        pipe.hmget(keys.sequences(partition), campaign_ids)
        for campaign_id in campaign_ids:
            pipe.get(keys.campaign(partition, campaign_id))
        watermark_raw, sequences, *aggregates = await pipe.execute()
        watermark_ms = int(watermark_raw or 0)
        for sequence, raw in zip(sequences, aggregates):
            if sequence is None or raw is None:
                continue
            aggregate = CampaignAggregate.from_json(orjson.loads(raw))
            values.extend(message.value for message in build(aggregate, int(sequence), watermark_ms))
    return values


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
