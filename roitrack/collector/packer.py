"""Pack the collector's events bound for one topic partition into one Kafka message.

With one event per message, Faust's cost per message is most of the worker's
CPU time (docs/benchmarks.md), and a message may carry a JSON array of events.
So the collector delays an accepted event by up to ``collector_pack_within_s``
and sends the events that arrived for the same topic partition in that time as
one array, from every request that is open at once. A pack is sent as soon as
it contains ``collector_pack_max_events`` events or would pass
``collector_pack_max_bytes``.

The partition is the one Kafka's default partitioner picks for the event's key
(``streams.state.partition_for_key``, with the topic's partition count from the
producer's metadata). So an event lands where it would have landed on its own,
and a packed message's key is its first event's key. One task per partition
number hands that partition's packs to the producer in the order they closed,
which keeps each person's events in the order the collector accepted them.
Each event's sender gets a future that resolves when the broker acknowledged
the message that contains it.

With ``collector_pack_within_s`` 0 every event is a message of its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.state import partition_for_key

#: Extra bytes of a JSON array around its items: the two brackets.
_ARRAY_BYTES = 2


def _new_acknowledgement() -> asyncio.Future[Any]:
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    # Marks a failure as seen, so asyncio logs no warning when every request of the pack went away.
    acked.add_done_callback(_retrieve)
    return acked


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Pack:
    """Events bound for one topic partition, sent as one message once closed."""

    topic: str
    partition: int | None
    key: bytes
    values: list[bytes] = field(default_factory=list)
    size: int = _ARRAY_BYTES
    acked: asyncio.Future[Any] = field(default_factory=_new_acknowledgement)
    timer: asyncio.TimerHandle | None = None

    def value(self) -> bytes:
        # A message of one event carries it unwrapped, as a producer that does not pack would send it.
        if len(self.values) == 1:
            return self.values[0]
        return b"[" + b",".join(self.values) + b"]"


class Packer:
    """Packs events per topic partition and hands the messages to an aiokafka producer in order."""

    def __init__(self, producer: Any, *, within_s: float, max_events: int, max_bytes: int) -> None:
        if within_s < 0:
            raise ValueError(f"within_s must be 0 or more, got {within_s}")
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self.producer = producer
        self.within_s = within_s
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._open: dict[tuple[str, int], _Pack] = {}
        # Each lane (a partition number, or the topic of a message without a partition) has its own queue
        # and sending task. producer.send waits while a partition's buffer is full, so a slow partition
        # stalls only its own lane.
        self._lanes: dict[int | str, asyncio.Queue[_Pack | None]] = {}
        self._senders: list[asyncio.Task[None]] = []
        #: Messages the broker acknowledged, and events in them, since start.
        self.messages = 0
        self.events = 0

    @property
    def enabled(self) -> bool:
        return self.within_s > 0

    async def stop(self) -> None:
        """Send the open packs, wait until the producer has every closed pack, and stop the sending tasks."""
        self.close_all()
        for lane in self._lanes.values():
            lane.put_nowait(None)
        await asyncio.gather(*self._senders)
        self._lanes.clear()
        self._senders.clear()

    async def send(
        self, topic: str, key: bytes, value: bytes, *, packable: bool = True, urgent: bool = False
    ) -> asyncio.Future[Any]:
        """Queue one event's JSON value and return a future for the acknowledgement of its message.

        An event that is not ``packable`` goes out as a message of its own, and
        the producer's partitioner places it. An event larger than a pack may
        be also goes out on its own, after the open pack of its partition, so
        that the partition keeps the order. So does every event when packing is
        off. An ``urgent`` event closes its pack at once, after the open packs
        of the same partition number in the other topics. A deal purchase is
        urgent, because a purchase kept in a pack while later events go out
        could reach the deal clock after its deadline (docs/architecture.md,
        group-buy deals). Raises KafkaError when the producer cannot read the
        topic's metadata.
        """
        if not packable:
            return self._close(_Pack(topic, None, key, [value]))
        partition = partition_for_key(key, await self._partition_count(topic))
        slot = (topic, partition)
        if urgent:
            self._close_other_topics(slot)
        added = len(value) + 1
        if not self.enabled or _ARRAY_BYTES + added > self.max_bytes:
            if slot in self._open:
                self._close_open(slot)
            return self._close(_Pack(topic, partition, key, [value]))

        pack = self._open.get(slot)
        if pack is not None and pack.size + added > self.max_bytes:
            self._close_open(slot)
            pack = None
        if pack is None:
            pack = _Pack(topic, partition, key)
            pack.timer = asyncio.get_running_loop().call_later(self.within_s, self._close_if_open, slot, pack)
            self._open[slot] = pack
        pack.values.append(value)
        pack.size += added
        if urgent or len(pack.values) >= self.max_events:
            self._close_open(slot)
        return pack.acked

    def close_all(self) -> None:
        """Close every open pack now."""
        for slot in list(self._open):
            self._close_open(slot)

    async def _partition_count(self, topic: str) -> int:
        # The producer refreshes its metadata itself, and a topic already in it needs no request.
        return len(await self.producer.partitions_for(topic))

    def _close_other_topics(self, slot: tuple[str, int]) -> None:
        """Close the open packs of the slot's partition number in the other topics."""
        topic, partition = slot
        for other in [other for other in self._open if other[1] == partition and other[0] != topic]:
            self._close_open(other)

    def _close_if_open(self, slot: tuple[str, int], pack: _Pack) -> None:
        if self._open.get(slot) is pack:
            self._close_open(slot)

    def _close_open(self, slot: tuple[str, int]) -> None:
        pack = self._open.pop(slot)
        if pack.timer is not None:
            pack.timer.cancel()
        self._close(pack)

    def _close(self, pack: _Pack) -> asyncio.Future[Any]:
        lane_key: int | str = pack.partition if pack.partition is not None else pack.topic
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(self._send_lane(lane), name=f"roitrack-packer-{lane_key}")
            self._senders.append(task)
        lane.put_nowait(pack)
        return pack.acked

    async def _send_lane(self, lane: asyncio.Queue[_Pack | None]) -> None:
        while True:
            pack = await lane.get()
            if pack is None:
                return
            try:
                delivery = await self.producer.send(
                    pack.topic, value=pack.value(), key=pack.key, partition=pack.partition
                )
            except asyncio.CancelledError:
                pack.acked.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every failure belongs to the pack's senders
                if not pack.acked.done():
                    pack.acked.set_exception(exc)
                continue
            delivery.add_done_callback(lambda done, pack=pack: self._delivered(done, pack))

    def _delivered(self, delivery: asyncio.Future[Any], pack: _Pack) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            self.messages += 1
            self.events += len(pack.values)
        _copy_result(delivery, pack.acked)


def _copy_result(done: asyncio.Future[Any], acked: asyncio.Future[Any]) -> None:
    if acked.done():
        return
    if done.cancelled():
        acked.cancel()
    elif (error := done.exception()) is not None:
        acked.set_exception(error)
    else:
        acked.set_result(done.result())
