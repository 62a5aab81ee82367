"""The end offset that the idle release compares with must cover the partition's last record batch."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.app import Pipeline

TOPIC = "touchpoints"


class FakeConsumer:
    """A consumer whose broker and fetcher return the given offsets."""

    def __init__(self, listed: int | Exception, fetched: int | None | Exception) -> None:
        self.listed = listed
        self.fetched = fetched

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        if isinstance(self.listed, Exception):
            raise self.listed
        return {partition: self.listed for partition in partitions}

    def highwater(self, tp: TP) -> int | None:
        if isinstance(self.fetched, Exception):
            raise self.fetched
        return self.fetched


def end_offset(consumer: FakeConsumer) -> Any:
    pipeline = SimpleNamespace(settings=SimpleNamespace(topic_touchpoints=TOPIC), app=SimpleNamespace(consumer=consumer))
    return asyncio.run(Pipeline.end_offset(pipeline, TOPIC, 3))  # type: ignore[arg-type]  # only the attributes it reads


def test_fetch_high_watermark_beyond_listed_offset_wins() -> None:
    # tansu returns the last record batch's base offset + 1 for ListOffsets (8 for offsets 7..11).
    assert end_offset(FakeConsumer(8, 12)) == 12


def test_listed_offset_beyond_last_fetch_wins() -> None:
    # Messages produced after the latest fetch.
    assert end_offset(FakeConsumer(20, 12)) == 20


def test_not_fetched_yet_uses_listed_offset() -> None:
    assert end_offset(FakeConsumer(8, None)) == 8
    assert end_offset(FakeConsumer(8, KeyError("not assigned"))) == 8


def test_broker_unreachable_is_unknown() -> None:
    assert end_offset(FakeConsumer(ConnectionError("down"), 12)) is None
