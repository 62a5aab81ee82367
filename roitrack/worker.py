"""Run the Faust worker in this process."""

from __future__ import annotations

import logging

from roitrack.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Start the worker and block until it is stopped (SIGTERM or SIGINT)."""
    import faust

    from streams.app import create_pipeline

    settings.require_kafka()
    pipeline = create_pipeline(settings)
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
