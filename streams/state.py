"""Redis state shared by the agents: key layout and the fenced batch write.

Every key that one Kafka partition's agent writes carries that partition in a
Redis Cluster hash tag (``{p3}`` for person partition 3, ``{c1}`` for
campaign partition 1). All of a partition's keys therefore live in one slot,
so a single Lua script can write a batch's state together with the partition
offsets it came from. That script is the fence that makes a batch count once:
it applies a batch only when the stored offsets are the ones this worker last
wrote or loaded. Stored offsets ahead of that mean another worker took the
partition over (StaleBatch); stored offsets behind it mean Redis lost writes,
for example after a crash with AOF ``everysec`` (StateRolledBack), and the
worker reads the partition again from the stored offsets.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from streams.command_packing import use_fast_packing
from streams.metrics import WorkerMetrics

if TYPE_CHECKING:
    from roitrack.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] is the offsets hash; the other KEYS are the keys the commands write.
# ARGV: n, then n quadruples (offset field, first offset, last offset, expected
# stored offset or -1 for none), then the commands, each as (arg count, command
# name, key index, args...). The pseudo-command ZADDCAPPED (key index 0) carries
# many sorted sets in one JSON argument; see FencedBatch.zadd_capped. Returns {1} when applied, {0, field, stored} when
# another worker is ahead, {2, field, stored} when Redis is behind this worker.
# Redis does not roll back a script that fails half-way, so the offsets are
# written last, and callers keep every command below MAX_COMMAND_ARGS
# arguments, under Lua's unpack() limit (8000 on Redis 7).
# NOTE: every write is one Redis command named by the caller, so this script
# must only receive commands from this module's callers, never from input.
_FENCED_APPLY_LUA = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  local expected = tonumber(ARGV[i + 3])
  if stored > expected or stored >= tonumber(ARGV[i + 1]) then
    return {0, ARGV[i], stored}
  end
  if stored < expected then
    return {2, ARGV[i], stored}
  end
  i = i + 4
end
local offsets_end = i
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  if ARGV[i + 1] == 'ZADDCAPPED' then
    local keep_rank = -(tonumber(ARGV[i + 3]) + 1)
    local below = '(' .. ARGV[i + 4]
    local ttl_ms = ARGV[i + 5]
    local flat = cjson.decode(ARGV[i + 6])
    local j = 1
    while j <= #flat do
      local key = KEYS[flat[j]]
      local last = j + 1 + 2 * flat[j + 1]
      local args = {}
      local m = 0
      for k = j + 2, last, 2 do
        args[m + 1] = string.format('%d', flat[k])
        args[m + 2] = flat[k + 1]
        m = m + 2
        if m >= 4000 then
          redis.call('ZADD', key, unpack(args, 1, m))
          m = 0
        end
      end
      if m > 0 then
        redis.call('ZADD', key, unpack(args, 1, m))
      end
      redis.call('ZREMRANGEBYRANK', key, 0, keep_rank)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', below)
      redis.call('PEXPIRE', key, ttl_ms)
      j = last + 1
    end
  else
    local key = KEYS[tonumber(ARGV[i + 2])]
    redis.call(ARGV[i + 1], key, unpack(ARGV, i + 3, i + 2 + count))
  end
  i = i + 3 + count
end
local j = 2
while j < offsets_end do
  redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 2])
  j = j + 4
end
return {1}
"""


#: Moves the consumer of one partition number's topics: (partition, {topic: next offset}).
Rewind = Callable[[int, dict[str, int]], Awaitable[None]]


def offset_gap_topics(
    kind: str, partition: int, records: Sequence[Any], offsets: dict[str, int], checked: set[str]
) -> list[str]:
    """Return the topics whose first record since a (re)load skips past the stored offset.

    Faust resumes from the offsets committed to Kafka, which trail the offsets
    in Redis unless Redis lost writes (an AOF ``everysec`` crash, a restore from
    an old backup) or someone moved the consumer group's offsets. The messages in
    such a gap are missing from the state, so the caller reads the topic again
    from the stored offset. Each topic is checked once per (re)load: offsets
    that Kafka itself skips (transaction markers, compaction) cost one extra read
    of the batch, not a loop.
    """
    gaps = []
    for record in records:
        if record.topic in checked:
            continue
        applied = offsets.get(record.topic, -1)
        if record.offset <= applied:
            continue  # applied before; the first new record decides
        checked.add(record.topic)
        if record.offset > applied + 1:
            log.error(
                "%s partition=%d topic=%s: Redis has applied offsets up to %d but Kafka resumed at %d; "
                "reading the %d message(s) in between again. If this repeats, check Redis persistence",
                kind, partition, record.topic, applied, record.offset, record.offset - applied - 1,
            )
            gaps.append(record.topic)
    return gaps


async def rewind_to_stored(
    store: "StateStore", offsets_key: str, partition: int, topics: Sequence[str], rewind: Rewind | None
) -> None:
    """Point the consumer of ``topics`` at the message after each stored offset."""
    offsets = await store.load_offsets(offsets_key)
    targets = {topic: offsets.get(topic, -1) + 1 for topic in topics}
    if rewind is None:
        log.error("partition=%d: no consumer to rewind to %s; the gap stays", partition, targets)
        return
    await rewind(partition, targets)


def partition_for_key(key: bytes, partitions: int) -> int:
    """Return the partition Kafka's default (murmur2) partitioner picks for a key."""
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


_MURMUR_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Return the 32-bit MurmurHash2 of ``data`` with Kafka's seed, as Kafka's Java client computes it.

    It gives the same results as kafka-python's ``murmur2``, faster, because it
    reads four bytes per step with ``struct`` instead of one at a time.
    """
    length = len(data)
    hashed = 0x9747B28C ^ length
    whole = length & ~3
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        word = (word * _MURMUR_M) & _MASK32
        word ^= word >> 24
        word = (word * _MURMUR_M) & _MASK32
        hashed = ((hashed * _MURMUR_M) & _MASK32) ^ word
    if length & 3:
        hashed ^= int.from_bytes(data[whole:], "little")
        hashed = (hashed * _MURMUR_M) & _MASK32
    hashed ^= hashed >> 13
    hashed = (hashed * _MURMUR_M) & _MASK32
    return hashed ^ (hashed >> 15)


# The attribution agent checks the partition of every event, and a person's
# events come close together, so recent keys repeat. 32,768 entries of 20-to-40-byte
# keys measured 7 to 10 MiB.
_murmur2 = lru_cache(maxsize=32_768)(murmur2)


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

    def history(self, partition: int, campaign_id: str) -> str:
        """Return the key of a campaign's event-time history buckets (``roitrack.history``), which are never pruned."""
        return f"{self.campaign_tag(partition)}:hist:{campaign_id}"

    def order_attributions(self, partition: int, order_id: str) -> str:
        """Attributions of one order id on person partition N, by conversion id; read by the query API."""
        return f"{self.person_tag(partition)}:order:{order_id}"

    def coupons(self) -> str:
        """Coupon code to campaign id; read by every person partition, so not tagged."""
        return f"{self.namespace}:coupons"

    def referral_codes(self) -> str:
        """Referral code to its first share's advocate, campaign and deal; shared by all partitions, so not tagged."""
        return f"{self.namespace}:referral_codes"

    def deals(self) -> str:
        """Deal id to campaign id, from deal definitions; read by every person partition, so not tagged."""
        return f"{self.namespace}:deals"

    def referral_queue(self, partition: int) -> str:
        """Clicks, sign-ups and purchases whose referrals are not decided yet."""
        return f"{self.person_tag(partition)}:referrals"

    def person_referrals(self, partition: int, person_id: str) -> str:
        """A person's advocate per campaign (``c:<campaign>``) and first purchase (``first``)."""
        return f"{self.person_tag(partition)}:ref:{person_id}"

    def social(self, partition: int, campaign_id: str) -> str:
        """A campaign's engagement, referral and deal state."""
        return f"{self.campaign_tag(partition)}:social:{campaign_id}"


#: Most arguments one command in a fenced batch may carry.
MAX_COMMAND_ARGS = 4000


@dataclass
class FencedBatch:
    """Commands that must apply together with the offsets they came from."""

    offsets_key: str
    offset_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Per offset field, the stored offset this worker last wrote or loaded (-1: none).
    expected: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    args: list[str | int | float | bytes] = field(default_factory=list)
    _key_index: dict[str, int] = field(default_factory=dict)

    def cover(self, offset_field: str, first: int, last: int, expected: int) -> None:
        """Record that this batch contains offsets first..last of ``offset_field``.

        ``expected`` is the offset this worker expects Redis to store for the field
        (-1 for none). The batch applies only if Redis stores exactly that offset.
        """
        self.expected.setdefault(offset_field, expected)
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
        self.args.extend((len(args), name, self._index(key)))
        self.args.extend(args)

    def zadd_capped(self, pairs_by_key: dict[str, list[int | str]], keep: int, min_score: int, ttl_ms: int) -> None:
        """Add (integer score, member) pairs to sorted sets and trim each set, in one argument for all sets.

        Per key it runs what these commands would: ``ZADD key pairs...``,
        ``ZREMRANGEBYRANK key 0 -(keep + 1)`` (keep the highest scores),
        ``ZREMRANGEBYSCORE key -inf (min_score`` and ``PEXPIRE key ttl_ms``.
        One JSON argument costs the worker far less than four commands per
        set with their arguments. Scores must lie within +-2^53, which Lua's
        doubles hold exactly.
        """
        flat: list[int | str] = []
        for key, pairs in pairs_by_key.items():
            flat.append(self._index(key))
            flat.append(len(pairs) // 2)
            flat.extend(pairs)
        if flat:
            self.args.extend((4, "ZADDCAPPED", 0, keep, min_score, ttl_ms, orjson.dumps(flat)))

    def _index(self, key: str) -> int:
        """Return the key's position in KEYS, adding it on first use."""
        index = self._key_index.get(key)
        if index is None:
            self.keys.append(key)
            index = self._key_index[key] = len(self.keys) + 1  # KEYS[1] is the offsets hash
        return index

    @property
    def empty(self) -> bool:
        return not self.offset_ranges and not self.args


class Round:
    """Redis commands and script calls sent together in one pipeline.

    On a standalone server that is one round trip, which costs this worker
    about 100 us of CPU time whatever it carries (docs/benchmarks.md), so the
    agents gather a partition's independent reads, and its independent writes,
    into one round each. A script goes in as EVALSHA. When the server does not
    have it (after a restart or a ``SCRIPT FLUSH``), that call alone runs again
    through its ``AsyncScript``, which loads it. The other replies are kept, so
    callers put only calls whose order does not matter into one round.
    """

    def __init__(self, client: "aioredis.Redis") -> None:
        self._pipe = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Any, Sequence[str], Sequence[Any]]] = {}
        self._size = 0

    def command(self, *args: str | int | bytes) -> int:
        """Queue one command, such as ``("HMGET", key, *fields)``, and return its reply's index."""
        self._pipe.execute_command(*args)
        self._size += 1
        return self._size - 1

    def script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> int:
        """Queue one call of a registered script, and return its reply's index."""
        self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        self._scripts[self._size] = (script, keys, args)
        self._size += 1
        return self._size - 1

    def __len__(self) -> int:
        return self._size

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the round and return the replies in queue order.

        With ``raise_on_error`` it raises the first error. Without, an error is
        returned in its reply's place, so that a caller whose round contains
        independent writes can record the ones that succeeded before it raises
        (``raise_first``).
        """
        if not self._size:
            return []
        replies = list(await self._pipe.execute(raise_on_error=False))
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and index in self._scripts:
                script, keys, args = self._scripts[index]
                try:
                    replies[index] = await script(keys=keys, args=args)
                except Exception as exc:  # noqa: BLE001  # returned in its place, as the pipeline's own errors are
                    replies[index] = exc
        if raise_on_error:
            raise_first(replies)
        return replies


def raise_first(replies: Sequence[Any]) -> None:
    """Raise the first error among a round's replies, if any."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class StaleBatch(Exception):
    """Raised when another worker already applied offsets of this batch."""

    def __init__(self, offset_field: str, stored: int) -> None:
        super().__init__(
            f"offsets of {offset_field} up to {stored} were already applied by another worker; "
            "this worker's copy of the partition is stale and is dropped"
        )
        self.offset_field = offset_field
        self.stored = stored


class StateRolledBack(Exception):
    """Raised when Redis stores an older offset than this worker last wrote, so writes were lost."""

    def __init__(self, offset_field: str, stored: int, expected: int) -> None:
        stored_text = "none" if stored < 0 else str(stored)
        super().__init__(
            f"Redis holds offset {stored_text} of {offset_field} but this worker wrote up to {expected}; "
            "Redis lost writes (check its persistence: AOF with appendfsync always or everysec), "
            "so the partition is read again from the stored offset"
        )
        self.offset_field = offset_field
        self.stored = stored
        self.expected = expected


class StateStore:
    """Async Redis access for the agents, with the metrics they report."""

    def __init__(self, client: "aioredis.Redis", keys: Keys, metrics: WorkerMetrics | None = None) -> None:
        self.client = client
        self.keys = keys
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._fenced_apply = client.register_script(_FENCED_APPLY_LUA)

    async def apply(self, batch: FencedBatch) -> None:
        """Apply a batch atomically.

        Raises StaleBatch when another worker applied offsets past this worker's,
        and StateRolledBack when Redis stores older offsets than this worker wrote.
        Either way nothing of the batch is written.
        """
        if batch.empty:
            return
        header: list[str | int | float | bytes] = [len(batch.offset_ranges)]
        for offset_field, (first, last) in batch.offset_ranges.items():
            header.extend((offset_field, first, last, batch.expected.get(offset_field, -1)))
        with self.metrics.redis("fenced_batch"):
            result = await self._fenced_apply(keys=[batch.offsets_key, *batch.keys], args=header + batch.args)
        status = int(result[0])
        if status == 0:
            raise StaleBatch(_text(result[1]), int(result[2]))
        if status == 2:
            offset_field = _text(result[1])
            raise StateRolledBack(offset_field, int(result[2]), batch.expected.get(offset_field, -1))

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
        standalone = aioredis.Redis.from_url(target, **options)
        use_fast_packing(standalone)
        return standalone
    client = redis_client(target, **options)
    use_fast_packing(client)
    # NOTE: StateStore and the agents annotate the standalone client. The cluster
    # client has every command they call (pipeline, register_script, ...), which
    # tests/integration/test_redis_cluster.py runs on a real cluster.
    return cast("aioredis.Redis", client)


def chunked(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
