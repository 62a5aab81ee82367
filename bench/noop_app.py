"""The ceiling: a Faust app whose only agent decodes each message's JSON and does nothing else.

Usage: ``python -m bench.noop_app RESULT_FILE EXPECTED_EVENTS``, with the
ROITRACK_* variables set. The app uses roitrack's Faust settings and consumer
transport (``streams.app.create_faust_app``), and its agent takes batches the
way roitrack's agents do: ``stream.take_events(ROITRACK_BATCH_MAX_EVENTS,
within=ROITRACK_BATCH_WITHIN_S)`` over the touchpoints and conversions topics.
It writes the wall time of its first batch to RESULT_FILE, and once it has
decoded EXPECTED_EVENTS events, also the time of its last batch and its counts.
It keeps running until stopped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from bench.procinfo import write_result
from bench.worker import configure_logging
from roitrack.settings import load_settings
from streams.app import create_faust_app


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.noop_app RESULT_FILE EXPECTED_EVENTS")
    result_path = Path(argv[0])
    expected_events = int(argv[1])
    configure_logging()
    settings = load_settings()
    app = create_faust_app(settings)
    topics = app.topic(settings.topic_touchpoints, settings.topic_conversions, key_type=bytes, value_type=bytes)
    counts = {"events": 0, "messages": 0, "batches": 0}
    first_batch_s: list[float] = []
    finished: list[bool] = []

    @app.agent(topics, name="bench.noop", concurrency=1)
    async def decode_only(stream: faust.StreamT[bytes]) -> None:
        take_events = stream.take_events  # type: ignore[attr-defined]  # on faust-streaming's Stream, not on StreamT
        async for events in take_events(settings.batch_max_events, within=settings.batch_within_s):
            if not first_batch_s:
                first_batch_s.append(time.time())
                write_result(result_path, {"first_s": first_batch_s[0]})
            for event in events:
                value: Any = orjson.loads(event.message.value)
                counts["events"] += len(value) if isinstance(value, list) else 1
            counts["messages"] += len(events)
            counts["batches"] += 1
            if counts["events"] >= expected_events and not finished:
                finished.append(True)
                write_result(result_path, {"first_s": first_batch_s[0], "last_s": time.time(), **counts})

    worker = faust.Worker(app, loglevel="info", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
