"""Pure parts of streams.state and streams.attribution: batch encoding, key layout, partitioning, touch members.

The Lua script itself needs a real Redis and is exercised by the integration tests.
"""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from kafka.partitioner.default import murmur2
from redis.crc import key_slot

from roitrack.attribution import StoredTouch
from streams.attribution import decode_touch, encode_touch
from streams.state import FencedBatch, Keys, StaleBatch, chunked, partition_for_key

# --- FencedBatch ---------------------------------------------------------


def test_batch_new_is_empty() -> None:
    assert FencedBatch("ns:{p0}:offsets").empty


def test_batch_command_encoding() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("ZADD", "ns:{p0}:tp:u1", 1700, "member")

    assert batch.keys == ["ns:{p0}:tp:u1"]
    assert batch.args == [2, "ZADD", 2, 1700, "member"]


def test_batch_first_key_index_is_two() -> None:
    # KEYS[1] is the offsets hash, so the first command key is KEYS[2].
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("DEL", "ns:{p0}:a")

    assert batch.args[2] == 2


def test_batch_new_keys_get_next_index() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("DEL", "ns:{p0}:a")
    batch.command("DEL", "ns:{p0}:b")
    batch.command("DEL", "ns:{p0}:c")

    assert batch.keys == ["ns:{p0}:a", "ns:{p0}:b", "ns:{p0}:c"]
    assert batch.args == [0, "DEL", 2, 0, "DEL", 3, 0, "DEL", 4]


def test_batch_repeated_key_reuses_index() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("ZADD", "ns:{p0}:a", 1, "x")
    batch.command("HSET", "ns:{p0}:b", "field", "value")
    batch.command("ZREM", "ns:{p0}:a", "x")

    assert batch.keys == ["ns:{p0}:a", "ns:{p0}:b"]
    assert batch.args == [2, "ZADD", 2, 1, "x", 2, "HSET", 3, "field", "value", 1, "ZREM", 2, "x"]


def test_batch_command_keeps_arg_types() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("SET", "ns:{p0}:a", b"\x00raw", 2.5)

    assert batch.args == [2, "SET", 2, b"\x00raw", 2.5]


def test_batch_command_makes_non_empty() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.command("DEL", "ns:{p0}:a")

    assert not batch.empty


def test_batch_cover_makes_non_empty() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.cover("touchpoints:0", 5, 9, -1)

    assert not batch.empty
    assert batch.offset_ranges == {"touchpoints:0": (5, 9)}


def test_batch_cover_merges_overlapping() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.cover("touchpoints:0", 5, 9, -1)
    batch.cover("touchpoints:0", 2, 7, -1)

    assert batch.offset_ranges == {"touchpoints:0": (2, 9)}


def test_batch_cover_extends_end() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.cover("touchpoints:0", 5, 9, -1)
    batch.cover("touchpoints:0", 10, 14, -1)

    assert batch.offset_ranges == {"touchpoints:0": (5, 14)}


def test_batch_cover_inner_range_no_change() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.cover("touchpoints:0", 5, 20, -1)
    batch.cover("touchpoints:0", 8, 9, -1)

    assert batch.offset_ranges == {"touchpoints:0": (5, 20)}


def test_batch_cover_fields_kept_apart() -> None:
    batch = FencedBatch("ns:{p0}:offsets")

    batch.cover("touchpoints:0", 5, 9, -1)
    batch.cover("conversions:0", 100, 101, -1)

    assert batch.offset_ranges == {"touchpoints:0": (5, 9), "conversions:0": (100, 101)}


# --- Keys ----------------------------------------------------------------

KEYS = Keys("rt")


def test_keys_person_tag_layout() -> None:
    assert KEYS.touchpoints(3, "user-1") == "rt:{p3}:tp:user-1"
    assert KEYS.pending(3) == "rt:{p3}:pending"
    assert KEYS.offsets(KEYS.person_tag(3)) == "rt:{p3}:offsets"


def test_keys_campaign_tag_layout() -> None:
    assert KEYS.campaign(1, "spring") == "rt:{c1}:camp:spring"
    assert KEYS.seen_credits(1) == "rt:{c1}:seen"


def test_keys_person_partition_one_slot() -> None:
    partition_keys = [
        KEYS.offsets(KEYS.person_tag(3)),
        KEYS.touchpoints(3, "user-1"),
        KEYS.touchpoints(3, "anon-{x}"),
        KEYS.pending(3),
        KEYS.person_stats(3),
        KEYS.referral_queue(3),
        KEYS.person_referrals(3, "user-1"),
    ]

    slots = {key_slot(key.encode()) for key in partition_keys}

    assert len(slots) == 1


def test_keys_campaign_partition_one_slot() -> None:
    partition_keys = [
        KEYS.offsets(KEYS.campaign_tag(1)),
        KEYS.campaign(1, "spring"),
        KEYS.campaign_index(1),
        KEYS.seen_credits(1),
        KEYS.sequences(1),
        KEYS.social(1, "spring"),
    ]

    slots = {key_slot(key.encode()) for key in partition_keys}

    assert len(slots) == 1


def test_keys_coupons_untagged() -> None:
    assert KEYS.coupons() == "rt:coupons"


def test_keys_social_lookups_untagged() -> None:
    assert KEYS.referral_codes() == "rt:referral_codes"
    assert KEYS.deals() == "rt:deals"


# --- partition_for_key ---------------------------------------------------

# Signed murmur2 hashes from the Java client's Utils.murmur2 (Apache Kafka's
# UtilsTest.testMurmur2). kafka-python returns the same bits as unsigned.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}
PARTITION_COUNTS = (1, 2, 3, 4, 8, 12)


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
def test_murmur2_matches_java_bits(key: bytes) -> None:
    assert murmur2(key) == JAVA_MURMUR2[key] & 0xFFFFFFFF


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
def test_partition_matches_java_client(key: bytes, partitions: int) -> None:
    expected = (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions

    assert partition_for_key(key, partitions) == expected


def test_partition_known_keys_eight_partitions() -> None:
    # Worked by hand from JAVA_MURMUR2: -973932308 & 0x7fffffff = 1173551340, % 8 = 4.
    assert partition_for_key(b"21", 8) == 4
    assert partition_for_key(b"abc", 8) == 479470107 % 8


@pytest.mark.parametrize("partitions", PARTITION_COUNTS)
@pytest.mark.parametrize("key", [b"user-1", b"anon-42", "personne-\u00e9".encode(), b"", b"x" * 300])
def test_partition_matches_aiokafka_partitioner(key: bytes, partitions: int) -> None:
    # Faust produces through aiokafka, so its default partitioner decides where a key lands.
    all_partitions = list(range(partitions))

    expected = AiokafkaPartitioner()(key, all_partitions, all_partitions)

    assert partition_for_key(key, partitions) == expected


@pytest.mark.parametrize("key", [b"user-1", b"anon-42", b""])
def test_partition_matches_kafka_python_formula(key: bytes) -> None:
    for partitions in PARTITION_COUNTS:
        expected = (murmur2(key) & 0x7FFFFFFF) % partitions
        assert partition_for_key(key, partitions) == expected, partitions


def test_partition_within_range() -> None:
    for index in range(200):
        assert 0 <= partition_for_key(f"user-{index}".encode(), 7) < 7


# --- StaleBatch and chunked ----------------------------------------------


def test_stale_batch_message_names_offset() -> None:
    error = StaleBatch("touchpoints:3", 41)

    assert "touchpoints:3" in str(error)
    assert "up to 41" in str(error)
    assert error.offset_field == "touchpoints:3"
    assert error.stored == 41


def test_chunked_splits_with_remainder() -> None:
    assert chunked(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_chunked_empty() -> None:
    assert chunked([], 3) == []


# --- encode_touch / decode_touch -----------------------------------------


@pytest.mark.parametrize("touch_class", ["click", "engagement", "checkin", "view"])
def test_touch_round_trip(touch_class: str) -> None:
    member = encode_touch("event-1", "spring", touch_class)

    decoded = decode_touch(member.encode(), 1_714_564_800_123.0)

    assert decoded == StoredTouch("event-1", "spring", touch_class, 1_714_564_800_123)  # type: ignore[arg-type]  # parametrised TouchClass


def test_touch_round_trip_unicode_ids() -> None:
    member = encode_touch("\u00e9v\u00e9nement-1", "campa\u00f1a:\u6625", "click")

    decoded = decode_touch(member.encode("utf-8"), 5.0)

    assert decoded.event_id == "\u00e9v\u00e9nement-1"
    assert decoded.campaign_id == "campa\u00f1a:\u6625"


def test_touch_round_trip_ids_with_punctuation() -> None:
    member = encode_touch("ev:1|2,3", "camp/{x}", "view")

    decoded = decode_touch(member.encode(), 0.0)

    assert decoded == StoredTouch("ev:1|2,3", "camp/{x}", "view", 0)


def test_touch_members_distinct_per_event() -> None:
    first = encode_touch("event-1", "spring", "click")
    second = encode_touch("event-2", "spring", "click")

    assert first != second


def test_touch_score_becomes_integer_ms() -> None:
    decoded = decode_touch(encode_touch("e", "c", "click").encode(), 1_714_564_800_999.0)

    assert decoded.time_ms == 1_714_564_800_999
    assert isinstance(decoded.time_ms, int)


def test_offset_gap_found_once_per_topic(caplog: pytest.LogCaptureFixture) -> None:
    from streams.records import Record
    from streams.state import offset_gap_topics

    checked: set[str] = set()
    records = [Record("touchpoints", 3, 99, b"k", b"{}"), Record("touchpoints", 3, 120, b"k", b"{}"),
               Record("conversions", 3, 8, b"k", b"{}")]

    assert offset_gap_topics("person", 3, records, {"touchpoints": 98, "conversions": 7}, checked) == []
    assert checked == {"touchpoints", "conversions"}

    checked = set()
    records = [Record("touchpoints", 3, 98, b"k", b"{}"), Record("touchpoints", 3, 120, b"k", b"{}")]
    assert offset_gap_topics("person", 3, records, {"touchpoints": 99}, checked) == ["touchpoints"]
    assert "20 message(s)" in caplog.text
    # Checked once per load: the same gap after the second read is accepted.
    assert offset_gap_topics("person", 3, records, {"touchpoints": 99}, checked) == []


def test_offset_gap_absent_offsets_start_at_zero(caplog: pytest.LogCaptureFixture) -> None:
    from streams.records import Record
    from streams.state import offset_gap_topics

    assert offset_gap_topics("person", 3, [Record("touchpoints", 3, 0, b"k", b"{}")], {}, set()) == []
    assert offset_gap_topics("person", 3, [Record("touchpoints", 3, 5, b"k", b"{}")], {}, set()) == ["touchpoints"]
