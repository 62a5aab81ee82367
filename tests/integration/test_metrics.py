"""Prometheus metrics of the worker and the collector, scraped after known traffic.

The worker gets its own topics and Redis namespace, so every counter starts at
zero and must end at exactly what this module sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from roitrack.collector import create_collector_app
from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.conftest import _delete_namespace
from tests.harness import WorkerProcess, click, ids, purchase, send, unique_settings, wait_for
from tests.web_client import free_port, get, wait_for_status

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str) -> Samples:
    """Return every sample of /metrics by name and sorted labels."""
    reply = get(base_url, "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass(frozen=True)
class Traffic:
    settings: Settings
    base_url: str
    samples: Samples
    worker: WorkerProcess


@pytest.fixture(scope="module")
def traffic(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    settings = unique_settings(kafka_bootstrap, redis_url, web_enabled=True, web_port=free_port(), log_format="json")
    create_topics(settings, kafka_bootstrap)
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("metrics-worker")).start()
    base_url = f"http://127.0.0.1:{settings.web_port}"
    try:
        wait_for_status(base_url, "/readyz", 200, timeout_s=60)
        person, campaign = ids("metrics-user"), ids("metrics-camp")
        first = click(person, campaign, "2026-11-02T09:00:00Z")
        # 4 touchpoint messages with 6 events: a batch of 3, two single clicks, and the first click again.
        send(settings, settings.topic_touchpoints, person, [
            first,
            click(person, campaign, "2026-11-02T09:05:00Z"),
            click(person, campaign, "2026-11-02T09:10:00Z"),
        ])
        send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T09:15:00Z"))
        send(settings, settings.topic_touchpoints, person, click(person, campaign, "2026-11-02T09:20:00Z"))
        send(settings, settings.topic_touchpoints, person, first)
        # 2 conversion messages: a purchase and a message that is not JSON.
        send(settings, settings.topic_conversions, person, purchase(person, "2026-11-02T10:00:00Z", amount="30"))
        send(settings, settings.topic_conversions, person, b"{not json")

        samples: Samples = {}

        def settled() -> bool:
            samples.clear()
            samples.update(scrape(base_url))
            return (
                value(samples, "roitrack_attribution_events_total", outcome="conversions_attributed") == 1
                and value(samples, "roitrack_messages_in_total", topic=settings.topic_credits) == 1
                and value(samples, "roitrack_messages_in_total", topic=settings.topic_touchpoints) == 4
                and value(samples, "roitrack_messages_in_total", topic=settings.topic_conversions) == 2
            )

        wait_for(settled, 60, "the journey's metrics", worker)
        yield Traffic(settings, base_url, samples, worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()
        assert "Traceback" not in worker.log_text()
        _delete_namespace(settings.redis_url, settings.redis_namespace)


def test_events_in_per_topic(traffic: Traffic) -> None:
    settings, samples = traffic.settings, traffic.samples

    assert value(samples, "roitrack_events_in_total", topic=settings.topic_touchpoints) == 6
    assert value(samples, "roitrack_events_in_total", topic=settings.topic_conversions) == 2
    assert value(samples, "roitrack_events_in_total", topic=settings.topic_credits) == 1
    assert value(samples, "roitrack_attribution_events_total", outcome="touchpoints") == 5


def test_events_out_per_topic(traffic: Traffic) -> None:
    settings, samples = traffic.settings, traffic.samples

    assert value(samples, "roitrack_events_out_total", topic=settings.topic_attributions) == 1
    assert value(samples, "roitrack_events_out_total", topic=settings.topic_credits) == 1
    assert value(samples, "roitrack_events_out_total", topic=settings.topic_dead_letters) == 1
    assert value(samples, "roitrack_events_out_total", topic=settings.topic_roi_updates) >= 4


def test_dead_letter_and_duplicate_counters(traffic: Traffic) -> None:
    settings, samples = traffic.settings, traffic.samples

    assert value(samples, "roitrack_dead_letters_total", reason="undecodable",
                 source_topic=settings.topic_conversions) == 1
    assert value(samples, "roitrack_duplicates_total", topic=settings.topic_touchpoints) == 1
    assert value(samples, "roitrack_attribution_events_total", outcome="duplicates") == 1


def test_latency_histograms(traffic: Traffic) -> None:
    samples = traffic.samples

    assert value(samples, "roitrack_attribution_latency_seconds_count") == 1
    assert value(samples, "roitrack_attribution_latency_seconds_sum") > 0
    # At least one batch of each agent: the person topics and the credit.
    assert value(samples, "roitrack_redis_seconds_count", operation="fenced_batch") >= 2
    assert value(samples, "roitrack_redis_seconds_count", operation="release_write") == 1
    assert value(samples, "roitrack_batch_seconds_count", agent="attribute") >= 1


def test_consumer_lag_per_partition(traffic: Traffic) -> None:
    settings = traffic.settings
    lags: dict[tuple[str, str], float] = {}

    def caught_up() -> bool:
        samples = scrape(traffic.base_url)
        lags.clear()
        lags.update({
            (dict(labels)["topic"], dict(labels)["partition"]): sample
            for (name, labels), sample in samples.items() if name == "roitrack_consumer_lag"
        })
        return len(lags) == 2 * settings.person_partitions + 3 * settings.campaign_partitions

    wait_for(caught_up, 30, "a lag sample for every assigned partition")
    assert set(lags.values()) == {0.0}, lags
    assert value(scrape(traffic.base_url), "roitrack_pending_conversions") == 0


def test_worker_logs_json_lines(traffic: Traffic) -> None:
    lines = [line for line in traffic.worker.log_text().splitlines() if line.strip()]

    entries = [orjson.loads(line) for line in lines]
    assert entries
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= set(entry), entry
    assigned = [entry for entry in entries if entry["message"].startswith("partitions assigned")]
    assert assigned and assigned[0]["logger"] == "streams.app"
    loaded = [entry for entry in entries if entry["message"].startswith("loaded person partition")]
    assert sorted(entry["partition"] for entry in loaded) == list(range(traffic.settings.person_partitions))


def test_collector_metrics(kafka_bootstrap: str) -> None:
    token = "collector-token-" + uuid.uuid4().hex[:6]
    settings = unique_settings(kafka_bootstrap, "redis://127.0.0.1:1/0", collector_tokens=(token,))
    create_topics(settings, kafka_bootstrap)
    person = ids("collector-user")
    events = [
        click(person, ids("camp"), "2026-11-02T09:00:00Z"),
        {**click(person, "", "2026-11-02T09:00:00Z")},  # empty campaign id: rejected
    ]

    async def scenario() -> str:
        runner = web.AppRunner(create_collector_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                async with session.post(f"{base}/v1/events", data=orjson.dumps(events), headers=headers) as response:
                    assert response.status == 200
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    return await response.text()
        finally:
            await runner.cleanup()

    text = asyncio.run(scenario())

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert value(samples, "roitrack_collector_events_total", endpoint="batch", status="accepted") == 1
    assert value(samples, "roitrack_collector_events_total", endpoint="batch", status="rejected") == 1
    assert token not in text
