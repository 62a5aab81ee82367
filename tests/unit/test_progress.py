"""Person partitions' event-time progress, which decides when a deal may expire."""

from __future__ import annotations

import asyncio

import pytest

from schemas.outputs import FieldError
from streams.progress import (
    ProgressReporter,
    SourceProgress,
    deal_clock,
    decode_progress,
    encode_sources,
    merge_progress,
    partition_progress,
    pop_sources,
    progress_message,
)
from streams.records import Outgoing


def test_clock_waits_for_every_person_partition() -> None:
    sources = {0: SourceProgress(5_000, False), 1: SourceProgress(9_000, False)}

    assert deal_clock(sources, 3) is None
    assert deal_clock({**sources, 2: SourceProgress(7_000, False)}, 3) == 5_000


def test_slow_partition_holds_the_clock_back() -> None:
    # The case the clock exists for: one partition hours ahead of another.
    sources = {0: SourceProgress(10 * 3_600_000, False), 1: SourceProgress(3 * 3_600_000, False)}

    assert deal_clock(sources, 2) == 3 * 3_600_000


def test_idle_partitions_do_not_hold_the_clock_back() -> None:
    sources = {0: SourceProgress(1_000, True), 1: SourceProgress(8_000, False), 2: SourceProgress(6_000, False)}

    assert deal_clock(sources, 3) == 6_000


def test_all_idle_uses_the_furthest_progress() -> None:
    sources = {0: SourceProgress(1_000, True), 1: SourceProgress(8_000, True)}

    assert deal_clock(sources, 2) == 8_000


def test_sources_beyond_the_partition_count_are_ignored() -> None:
    sources = {0: SourceProgress(4_000, False), 5: SourceProgress(1, False)}

    assert deal_clock(sources, 1) == 4_000


def test_progress_never_moves_back() -> None:
    known = SourceProgress(9_000, False)

    assert merge_progress(known, SourceProgress(7_000, True)) == SourceProgress(9_000, True)
    assert merge_progress(None, SourceProgress(7_000, True)) == SourceProgress(7_000, True)


def test_message_round_trip() -> None:
    value = progress_message(3, SourceProgress(1_700_000_000_000, True))

    assert decode_progress(value, 8) == (3, SourceProgress(1_700_000_000_000, True))


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"source_partition": 8}, "source_partition", "8"),
        ({"source_partition": True}, "source_partition", "True"),
        ({"source_partition": "1"}, "source_partition", "1"),
        ({"progress_ms": 1.5}, "progress_ms", "1.5"),
        ({"progress_ms": None}, "progress_ms", None),
        ({"idle": "no"}, "idle", "no"),
    ],
)
def test_bad_message_names_the_field(change: dict[str, object], field: str, value: str | None) -> None:
    message = {**progress_message(1, SourceProgress(5, False)), **change}

    problem = decode_progress(message, 8)

    assert isinstance(problem, FieldError)
    assert (problem.field, problem.value) == (field, value)


def test_sources_survive_the_offsets_hash() -> None:
    sources = {0: SourceProgress(5_000, False), 3: SourceProgress(-2_000, True)}
    offsets = {"credits": 41, "_watermark_ms": 9, **encode_sources(sources)}

    assert pop_sources(offsets) == sources
    assert offsets == {"credits": 41, "_watermark_ms": 9}


def test_reporter_sends_to_every_campaign_partition_when_changed() -> None:
    sent: list[list[Outgoing]] = []

    async def send(messages: list[Outgoing]) -> None:
        sent.append(messages)

    async def scenario() -> list[bool]:
        reporter = ProgressReporter("credits", 3, 5.0, send)
        return [
            await reporter.report(2, SourceProgress(1_000, False), now_s=100.0),
            await reporter.report(2, SourceProgress(2_000, False), now_s=101.0),  # too soon
            await reporter.report(2, SourceProgress(1_000, False), now_s=106.0),  # unchanged
            await reporter.report(2, SourceProgress(3_000, False), now_s=108.0),  # unchanged 2 s ago
            await reporter.report(2, SourceProgress(3_000, True), now_s=111.0),
        ]

    assert asyncio.run(scenario()) == [True, False, False, False, True]
    assert [message.partition for message in sent[0]] == [0, 1, 2]
    assert {message.topic for message in sent[0]} == {"credits"}
    assert [message.value["idle"] for message in sent[1]] == [True, True, True]


TOUCH, CONVERSION = "touchpoints", "conversions"


def test_progress_is_earliest_active_topic() -> None:
    # Purchases arrived a moment ago up to 12:00, and touchpoints are at 18:00.
    # A packed conversions message may still be on its way, so 12:00 counts.
    reached = {TOUCH: 18 * 3_600_000, CONVERSION: 12 * 3_600_000}

    assert partition_progress(reached, [TOUCH, CONVERSION], []) == SourceProgress(12 * 3_600_000, False)


def test_quiet_topic_does_not_hold_back() -> None:
    reached = {TOUCH: 18 * 3_600_000, CONVERSION: 12 * 3_600_000}

    assert partition_progress(reached, [TOUCH], []) == SourceProgress(18 * 3_600_000, False)


def test_no_active_topic_means_idle() -> None:
    reached = {TOUCH: 18 * 3_600_000, CONVERSION: 12 * 3_600_000}

    assert partition_progress(reached, [], []) == SourceProgress(18 * 3_600_000, True)
    assert partition_progress({}, [], []) == SourceProgress(0, True)


def test_pending_deal_purchase_limits_progress() -> None:
    reached = {TOUCH: 18 * 3_600_000, CONVERSION: 17 * 3_600_000}

    progress = partition_progress(reached, [], [15 * 3_600_000, 16 * 3_600_000])

    assert progress == SourceProgress(15 * 3_600_000 - 1, False)
