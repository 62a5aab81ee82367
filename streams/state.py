"""Redis state shared by the agents: key layout and the fenced batch write.

Every key that one Kafka partition's agent writes carries that partition in a
Redis Cluster hash tag (``{p3}`` for person partition 3, ``{c1}`` for
campaign partition 1). All of a partition's keys therefore live in one slot,
so a single Lua script can write a batch's state together with the partition
offsets it came from. That script is the fence that makes a batch count once:
it refuses a batch whose first offset is not above the stored one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence, cast

import redis.asyncio as aioredis
from kafka.partitioner.default import murmur2

from streams.metrics import WorkerMetrics

if TYPE_CHECKING:
    from roitrack.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] is the offsets hash; the other KEYS are the keys the commands write.
# ARGV: n, then n triples (offset field, first offset, last offset), then the
# commands, each as (arg count, command name, key index, args...).
# Redis does not roll back a script that fails half-way, so the offsets are
# written last, and callers keep every command below MAX_COMMAND_ARGS
# arguments, under Lua's unpack() limit (8000 on Redis 7).
# NOTE: every write is one Redis command named by the caller, so this script
# must only receive commands from this module's callers, never from input.
_FENCED_APPLY_LUA = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  if stored and tonumber(stored) >= tonumber(ARGV[i + 1]) then
    return {0, ARGV[i], stored}
  end
  i = i + 3
end
local offsets_end = i
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local key = KEYS[tonumber(ARGV[i + 2])]
  redis.call(ARGV[i + 1], key, unpack(ARGV, i + 3, i + 2 + count))
  i = i + 3 + count
end
local j = 2
while j < offsets_end do
  redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 2])
  j = j + 3
end
return {1}
"""


def warn_offset_gap(kind: str, partition: int, record: Any, applied: int | None) -> bool:
    """Log when the first message after a (re)load is not the one after the last applied offset.

    Faust resumes from the offsets committed to Kafka, which trail the offsets
    in Redis unless Redis lost writes (for example an AOF ``everysec`` crash)
    or someone moved the consumer group's offsets. Messages in the gap are
    missing from the state. Returns True when there is a gap.
    """
    if applied is None or record.offset <= applied + 1:
        return False
    log.error(
        "%s partition=%d topic=%s: Redis has applied offsets up to %d but Kafka resumed at %d; "
        "%d message(s) are missing from the Redis state. Check Redis persistence; to rebuild, "
        "stop the workers and reset the group's offsets for this partition to %d",
        kind, partition, record.topic, applied, record.offset, record.offset - applied - 1, applied + 1,
    )
    return True


def partition_for_key(key: bytes, partitions: int) -> int:
    """Return the partition Kafka's default (murmur2) partitioner picks for a key."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every Redis key of one deployment namespace."""

    namespace: str

    def person_tag(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    def campaign_tag(self, partition: int) -> str:
        return f"{self.namespace}:{{c{partition}}}"

    def offsets(self, tag: str) -> str:
        return f"{tag}:offsets"

    def touchpoints(self, partition: int, person_id: str) -> str:
        return f"{self.person_tag(partition)}:tp:{person_id}"

    def pending(self, partition: int) -> str:
        return f"{self.person_tag(partition)}:pending"

    def aliases(self, partition: int, user_id: str) -> str:
        """Anonymous ids linked to a user id (identity stitching)."""
        return f"{self.person_tag(partition)}:alias:{user_id}"

    def seen_events(self, partition: int) -> str:
        """Conversion event ids and order ids seen within the deduplication horizon."""
        return f"{self.person_tag(partition)}:seen"

    def flood_address(self, address: str, bucket: int) -> str:
        """Click ids from one truncated IP address in one flood window; shared by all partitions."""
        return f"{self.namespace}:flood:{address}:{bucket}"

    def person_stats(self, partition: int) -> str:
        return f"{self.person_tag(partition)}:stats"

    def campaign(self, partition: int, campaign_id: str) -> str:
        return f"{self.campaign_tag(partition)}:camp:{campaign_id}"

    def campaign_index(self, partition: int) -> str:
        return f"{self.campaign_tag(partition)}:campaigns"

    def seen_credits(self, partition: int) -> str:
        return f"{self.campaign_tag(partition)}:seen"

    def sequences(self, partition: int) -> str:
        return f"{self.campaign_tag(partition)}:seq"

    def order_attributions(self, partition: int, order_id: str) -> str:
        """Attributions of one order id on person partition N, by conversion id; read by the query API."""
        return f"{self.person_tag(partition)}:order:{order_id}"

    def coupons(self) -> str:
        """Coupon code to campaign id; read by every person partition, so not tagged."""
        return f"{self.namespace}:coupons"


#: Most arguments one command in a fenced batch may carry.
MAX_COMMAND_ARGS = 4000


@dataclass
class FencedBatch:
    """Commands that must apply together with the offsets they came from."""

    offsets_key: str
    offset_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    args: list[str | int | float | bytes] = field(default_factory=list)
    _key_index: dict[str, int] = field(default_factory=dict)

    def cover(self, offset_field: str, first: int, last: int) -> None:
        """Record that this batch contains offsets first..last of ``offset_field``."""
        known = self.offset_ranges.get(offset_field)
        if known is not None:
            first, last = min(first, known[0]), max(last, known[1])
        self.offset_ranges[offset_field] = (first, last)

    def command_many(
        self, name: str, key: str, values: Sequence[str | int | float | bytes], group: int = 1,
    ) -> None:
        """Add a variadic command (ZADD, SADD, HSET...) split into chunks of whole groups.

        ``group`` is how many values form one item: 2 for ZADD's score-member pairs.
        """
        step = max(group, MAX_COMMAND_ARGS - MAX_COMMAND_ARGS % group)
        for start in range(0, len(values), step):
            self.command(name, key, *values[start : start + step])

    def command(self, name: str, key: str, *args: str | int | float | bytes) -> None:
        if len(args) > MAX_COMMAND_ARGS:
            raise ValueError(
                f"{name} with {len(args)} arguments exceeds {MAX_COMMAND_ARGS}; use command_many()"
            )
        index = self._key_index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._key_index[key] = len(self.keys) + 1  # KEYS[1] is the offsets hash
        self.args.extend((len(args), name, index))
        self.args.extend(args)

    @property
    def empty(self) -> bool:
        return not self.offset_ranges and not self.args


class StaleBatch(Exception):
    """Raised when another worker already applied offsets of this batch."""

    def __init__(self, offset_field: str, stored: int) -> None:
        super().__init__(
            f"offsets of {offset_field} up to {stored} were already applied by another worker; "
            "this worker's copy of the partition is stale and is dropped"
        )
        self.offset_field = offset_field
        self.stored = stored


class StateStore:
    """Async Redis access for the agents, with the metrics they report."""

    def __init__(self, client: "aioredis.Redis", keys: Keys, metrics: WorkerMetrics | None = None) -> None:
        self.client = client
        self.keys = keys
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._fenced_apply = client.register_script(_FENCED_APPLY_LUA)

    async def apply(self, batch: FencedBatch) -> None:
        """Apply a batch atomically, or raise StaleBatch if its offsets were applied already."""
        if batch.empty:
            return
        header: list[str | int | float | bytes] = [len(batch.offset_ranges)]
        for offset_field, (first, last) in batch.offset_ranges.items():
            header.extend((offset_field, first, last))
        with self.metrics.redis("fenced_batch"):
            result = await self._fenced_apply(keys=[batch.offsets_key, *batch.keys], args=header + batch.args)
        if int(result[0]) == 0:
            raise StaleBatch(_text(result[1]), int(result[2]))

    async def load_offsets(self, offsets_key: str) -> dict[str, int]:
        raw = await self.client.hgetall(offsets_key)
        return {_text(name): int(value) for name, value in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def connect(target: "str | Settings") -> "aioredis.Redis":
    """Open an async Redis client from a URL, or from the settings; the caller closes it.

    With settings, ``ROITRACK_REDIS_CLUSTER`` selects redis-py's cluster client and
    ``ROITRACK_REDIS_SSL_CAFILE`` its CA file; a URL alone gives a standalone client.
    """
    from roitrack.connections import redis_client

    options: dict[str, Any] = {"decode_responses": False, "health_check_interval": 30}
    if isinstance(target, str):
        return aioredis.Redis.from_url(target, **options)
    client = redis_client(target, **options)
    # NOTE: StateStore and the agents annotate the standalone client. The cluster
    # client has every command they call (pipeline, register_script, ...), which
    # tests/integration/test_redis_cluster.py runs on a real cluster.
    return cast("aioredis.Redis", client)


def chunked(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
