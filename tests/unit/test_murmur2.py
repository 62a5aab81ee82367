"""roitrack's murmur2 against kafka-python's, which matches Kafka's Java client."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.state import murmur2, partition_for_key


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_python(data: bytes) -> None:
    assert murmur2(data) == kafka_python_murmur2(data)


def test_murmur2_known_values() -> None:
    # The vectors of Kafka's UtilsTest.testMurmur2, which Java prints as signed ints.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107


def test_partition_for_key_repeats_from_cache() -> None:
    first = partition_for_key(b"person-42", 12)

    assert partition_for_key(b"person-42", 12) == first
    assert first == (kafka_python_murmur2(b"person-42") & 0x7FFFFFFF) % 12
