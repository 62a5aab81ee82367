"""Event-time progress of person partitions, as seen by campaign partitions.

A deal expires when event time passes its deadline plus a grace period. A
campaign partition receives credits from every person partition, and these can
be hours apart in event time: one partition may be caught up while another
still has a backlog. The campaign partition's own watermark (the latest event
time it saw) would then expire a deal before the slower partition's buyers
arrive. So each person partition reports to every campaign partition how far it
has got, and a deal expires only once all of them are past its deadline.

The person side (``ProgressReporter``) sends one ``source_progress`` message
per campaign partition of the credits topic, at most every
``ROITRACK_PROGRESS_INTERVAL_S`` and only when its progress changed. The
message goes after the credits the partition released up to that time, from
the same producer to the same topic partition, so a campaign partition that
reads the message has read those credits already. The progress is:

- ``progress_ms``: per input topic (touchpoints, conversions), the latest event
  time the partition applied. A topic is active while the consumer's latest
  fetch left a backlog on it or a message of it arrived within
  ``ROITRACK_CONVERSION_IDLE_RELEASE_S``; the progress is the earliest of the
  active topics, or the furthest topic when none is active. It stays below the
  earliest deal purchase still pending, so every deal purchase at or before it
  has been credited;
- ``idle``: no input topic is active and no deal purchase is pending.

A quiet topic cannot hold the progress back, or a partition with few purchases
would stop deals from expiring. The cost is the one an idle source has in
Flink. A producer that delays an old event for longer than the idle time while
it sends later ones can see the event arrive after the clock passed it.
Producers that pack events into batch messages therefore send a deal purchase
at once (``roitrack.replay``).

The campaign side (``deal_clock``) takes the earliest progress over the person
partitions that are not idle. An idle partition does not hold deals back, as
an idle source does not hold a Flink watermark back. When all are idle, the
clock is the latest progress of any of them. Until every person partition has
reported once, there is no clock and no deal expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

from schemas.decode import describe_value
from schemas.outputs import FieldError
from streams.records import Outgoing

PROGRESS_TYPE = "source_progress"
#: Campaign partitions keep each source's progress in their offsets hash under these prefixes.
PROGRESS_FIELD = "_progress_ms"
IDLE_FIELD = "_progress_idle"


@dataclass(frozen=True, slots=True)
class SourceProgress:
    """How far one person partition has credited deal purchases, in event time."""

    progress_ms: int
    idle: bool


def partition_progress(reached: Mapping[str, int], active: Iterable[str], deal_times: Iterable[int]) -> SourceProgress:
    """Return one person partition's progress (see the module docstring).

    ``reached`` maps each input topic to the latest event time applied from it,
    ``active`` names the topics with a backlog or a recent message, and
    ``deal_times`` are the event times of the deal purchases still pending.
    """
    active_ms = [reached.get(topic, 0) for topic in active]
    progress_ms = min(active_ms) if active_ms else max(reached.values(), default=0)
    earliest_deal_ms = min(deal_times, default=None)
    if earliest_deal_ms is not None:
        progress_ms = min(progress_ms, earliest_deal_ms - 1)
    return SourceProgress(progress_ms, idle=not active_ms and earliest_deal_ms is None)


def is_progress_message(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == PROGRESS_TYPE


def progress_message(source_partition: int, progress: SourceProgress) -> dict[str, Any]:
    return {
        "type": PROGRESS_TYPE,
        "source_partition": source_partition,
        "progress_ms": progress.progress_ms,
        "idle": progress.idle,
    }


def decode_progress(value: dict[str, Any], person_partitions: int) -> tuple[int, SourceProgress] | FieldError:
    """Return the source partition and its progress, or the first field that is wrong."""
    source = value.get("source_partition")
    if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < person_partitions:
        return FieldError(field="source_partition", value=describe_value(source),
                          reason=f"must be a person partition number from 0 to {person_partitions - 1}")
    progress_ms = value.get("progress_ms")
    if not isinstance(progress_ms, int) or isinstance(progress_ms, bool):
        return FieldError(field="progress_ms", value=describe_value(progress_ms), reason="must be an integer of epoch milliseconds")
    idle = value.get("idle")
    if not isinstance(idle, bool):
        return FieldError(field="idle", value=describe_value(idle), reason="must be true or false")
    return source, SourceProgress(progress_ms, idle)


def merge_progress(known: SourceProgress | None, update: SourceProgress) -> SourceProgress:
    """Keep the later progress, with the update's idle flag.

    Progress never moves back, because after a rebalance the new owner of a person
    partition may report from an older watermark than its previous owner did.
    """
    if known is None:
        return update
    return SourceProgress(max(known.progress_ms, update.progress_ms), update.idle)


def deal_clock(sources: Mapping[int, SourceProgress], person_partitions: int) -> int | None:
    """Return the event time up to which every person partition has credited deal purchases, or None."""
    if any(partition not in sources for partition in range(person_partitions)):
        return None
    active = [progress.progress_ms for partition, progress in sources.items()
              if partition < person_partitions and not progress.idle]
    if active:
        return min(active)
    return max(progress.progress_ms for partition, progress in sources.items() if partition < person_partitions)


def encode_sources(sources: Mapping[int, SourceProgress]) -> dict[str, int]:
    """Render the sources as offsets-hash fields."""
    fields: dict[str, int] = {}
    for partition, progress in sources.items():
        fields[f"{PROGRESS_FIELD}:{partition}"] = progress.progress_ms
        fields[f"{IDLE_FIELD}:{partition}"] = int(progress.idle)
    return fields


def pop_sources(offsets: dict[str, int]) -> dict[int, SourceProgress]:
    """Take the sources' fields out of a loaded offsets hash and return the sources."""
    progress: dict[int, int] = {}
    idle: dict[int, bool] = {}
    for name in [name for name in offsets if name.startswith((PROGRESS_FIELD + ":", IDLE_FIELD + ":"))]:
        prefix, _, partition = name.partition(":")
        value = offsets.pop(name)
        if prefix == PROGRESS_FIELD:
            progress[int(partition)] = value
        else:
            idle[int(partition)] = bool(value)
    return {partition: SourceProgress(value, idle.get(partition, False)) for partition, value in progress.items()}


class ProgressReporter:
    """Sends a person partition's progress to every campaign partition when it changed."""

    def __init__(
        self,
        topic: str,
        campaign_partitions: int,
        interval_s: float,
        send: Callable[[list[Outgoing]], Awaitable[None]],
    ) -> None:
        self.topic = topic
        self.campaign_partitions = campaign_partitions
        self.interval_s = interval_s
        self.send = send
        self._sent: dict[int, tuple[SourceProgress, float]] = {}

    def forget(self, partition: int) -> None:
        """Report the partition again from scratch, as after it was assigned to this worker anew."""
        self._sent.pop(partition, None)

    def due(self, partition: int, now_s: float) -> bool:
        """Return True when the partition's last report is at least the interval old."""
        last = self._sent.get(partition)
        return last is None or now_s - last[1] >= self.interval_s

    async def report(self, partition: int, progress: SourceProgress, now_s: float | None = None) -> bool:
        """Send the progress unless it is unchanged or the last check is too recent; return True if sent."""
        now_s = time.monotonic() if now_s is None else now_s
        last = self._sent.get(partition)
        if last is not None and not self.due(partition, now_s):
            return False
        if last is not None and last[0] == progress:
            self._sent[partition] = (progress, now_s)  # checked: the next check waits the interval
            return False
        value = progress_message(partition, progress)
        await self.send([
            Outgoing(self.topic, str(partition), value, partition=target)
            for target in range(self.campaign_partitions)
        ])
        self._sent[partition] = (progress, now_s)
        return True
