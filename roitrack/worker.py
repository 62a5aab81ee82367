"""Run the Faust worker in this process."""

from __future__ import annotations

import gc
import logging

from roitrack.settings import Settings

log = logging.getLogger(__name__)


def tune_gc(settings: Settings) -> None:
    """Apply ``ROITRACK_GC_GEN0_THRESHOLD``: freeze the objects created so far and collect less often.

    Call it once the pipeline is built, so its long-lived objects are frozen.
    """
    if not settings.gc_gen0_threshold:
        return
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_gen0_threshold, older, oldest)
    log.info("garbage collector: %d startup objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Start the worker and block until it is stopped (SIGTERM or SIGINT)."""
    import faust

    from streams.app import create_pipeline

    settings.require_kafka()
    pipeline = create_pipeline(settings)
    tune_gc(settings)
    log.info(
        "starting worker app_id=%s brokers=%s person_partitions=%d campaign_partitions=%d",
        settings.app_id, settings.kafka_bootstrap, settings.person_partitions, settings.campaign_partitions,
    )
    # override_logging=False keeps the handler of roitrack.logs (text or JSON lines)
    # instead of the colour formatter that mode would install.
    worker = faust.Worker(
        pipeline.app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False,
    )
    # Faust drops its terminal spinner while it sets up logging, which is skipped here;
    # without this the spinner writes cursor escape codes into the log.
    worker.spinner = None
    worker.execute_from_commandline()
