"""Run `roitrack worker` in this process and note when its attribution agent gets its first batch.

Usage: ``python -m bench.worker RESULT_FILE``, with the ROITRACK_* variables
set. It builds the pipeline and tunes the garbage collector exactly as
``roitrack.worker.run_worker`` does. The only addition is a wrapper around the
attribution processor that writes the wall time of the first batch to
RESULT_FILE, which is where the harness starts the clock. The wrapper costs one comparison per batch.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

import faust

from bench.procinfo import write_result
from roitrack.settings import load_settings
from roitrack.worker import tune_gc
from streams.app import create_pipeline
from streams.records import Record


def configure_logging() -> None:
    """Log like `roitrack --log-level info`: INFO, with kafka-python and aiokafka at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.worker RESULT_FILE")
    configure_logging()
    result_path = Path(argv[0])
    settings = load_settings()
    pipeline = create_pipeline(settings)
    tune_gc(settings)
    process = pipeline.attribution.process
    stats: dict[str, float] = {"batches": 0, "records": 0, "handler_s": 0.0}

    async def timed_process(records: Sequence[Record]) -> None:
        started_s = time.time()
        if not stats["batches"]:
            stats["first_s"] = started_s
            write_result(result_path, {"first_s": started_s})
        try:
            await process(records)
        finally:
            stats["batches"] += 1
            stats["records"] += len(records)
            stats["handler_s"] += time.time() - started_s

    def write_stats() -> None:
        if stats["batches"]:
            write_result(result_path, stats)

    atexit.register(write_stats)

    pipeline.attribution.process = timed_process  # type: ignore[method-assign]  # instance-level wrapper, same signature
    worker = faust.Worker(pipeline.app, loglevel="info", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
