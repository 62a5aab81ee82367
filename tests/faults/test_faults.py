"""Fault injection on the real broker, Redis and worker processes.

Each test replays the reduced journey dataset (see tests/faults/pipeline.py) at a limited
rate and injects one kind of fault while the stream runs. It then requires the final
lifetime roi-updates of every campaign, under all five models, and the Redis counters to
equal a clean run's exactly, with nothing valid in the dead-letter topic.

Run them with ``pytest -m faults``; ``bench/run_faults.sh`` runs the suite three times.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from roitrack.embedded import EmbeddedBroker
from tests.faults.conftest import FaultSettings, Workers
from tests.faults.pipeline import (
    ReplayThread,
    assert_clean_logs,
    assert_exact,
    collect_outcome,
    conversions_done,
    expected_figures,
    load_dataset,
    safe_stats,
    wait_progress,
)
from tests.faults.services import AofRedis

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

log = logging.getLogger(__name__)

#: Replay rate of the fault tests: the 43,000 events of 1,500 rows take about 70 s, so
#: every fault lands while the stream runs.
RATE_PER_S = 600.0
#: A restarted worker rejoins its group after about 13 s on tansu: a SIGKILLed member
#: stays in the group until its 6 s session times out, and the rejoin waits for it.
REJOIN_ALLOWANCE_S = 60.0


def _progress(settings: Any) -> int:
    stats = safe_stats(settings)
    return -1 if stats is None else stats.touchpoints + stats.conversions_received


def test_clean_run_matches_truth(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """The baseline: without a fault the pipeline ends with the figures of the pure functions."""
    settings = fault_settings(kafka_bootstrap, redis_url)
    dataset = load_dataset()
    expected = expected_figures(dataset, settings)
    worker = workers.start(settings)
    replay = ReplayThread(settings, dataset, RATE_PER_S).start()

    outcome = collect_outcome(settings, expected, [worker])
    replay.join(60)

    assert_exact(outcome)
    assert len(outcome.attribution_ids) == len(expected.conversion_ids), "a clean run repeats no attribution"
    assert_clean_logs([worker])


def test_worker_sigkill_repeatedly(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """SIGKILL the worker four times, 8-15 s after each start, and restart it each time."""
    settings = fault_settings(kafka_bootstrap, redis_url)
    dataset = load_dataset()
    expected = expected_figures(dataset, settings)
    rng = random.Random(20261204)
    worker = workers.start(settings, "kill-0")
    replay = ReplayThread(settings, dataset, RATE_PER_S).start()

    kills: list[tuple[float, int, bool]] = []  # (seconds after replay start, conversions done, replay running)
    for attempt in range(1, 5):
        started_at = time.monotonic()
        before = _progress(settings)
        assert wait_progress(lambda: _progress(settings) > before, REJOIN_ALLOWANCE_S, [worker]), (
            f"worker {attempt - 1} made no progress within {REJOIN_ALLOWANCE_S} s of its start; log:\n{worker.log_tail()}"
        )
        # Kill 8-15 s after the start, but only after 2-5 s of work, so each worker is
        # killed while it processes rather than while it rejoins the group.
        kill_at = max(started_at + rng.uniform(8.0, 15.0), time.monotonic() + rng.uniform(2.0, 5.0))
        time.sleep(max(0.0, kill_at - time.monotonic()))
        worker.kill()
        kills.append((round(replay.elapsed_s, 1), conversions_done(settings), not replay.done))
        worker = workers.start(settings, f"kill-{attempt}")

    outcome = collect_outcome(settings, expected, [worker], timeout_s=300)
    replay.join(60)

    print(f"kills (s after replay start, conversions done, replay running): {kills}")
    assert sum(1 for _, _, running in kills if running) >= 2, f"fewer than 2 kills hit the running replay: {kills}"
    assert_exact(outcome)
    assert_clean_logs(workers.started)


def _redis_restart_scenario(
    tmp_path: Path,
    kafka_bootstrap: str,
    fault_settings: FaultSettings,
    workers: Workers,
    appendfsync: str,
    stop: str,
    down_s: float,
) -> tuple[Any, Any, list[str]]:
    dataset = load_dataset()
    server = AofRedis(tmp_path / "redis", appendfsync)
    server.start()
    try:
        settings = fault_settings(kafka_bootstrap, server.url)
        expected = expected_figures(dataset, settings)
        worker = workers.start(settings)
        replay = ReplayThread(settings, dataset, RATE_PER_S).start()
        third = expected.stats.conversions_done // 3
        assert wait_progress(lambda: conversions_done(settings) >= third, 120, [worker]), "no progress before the fault"

        notes = []
        before = safe_stats(settings)
        status = server.terminate() if stop == "sigterm" else server.kill()
        notes.append(f"redis stopped by {stop} (exit {status}) at {replay.elapsed_s:.1f} s with {before}")
        time.sleep(down_s)
        server.start()
        after = safe_stats(settings)
        notes.append(f"redis restarted after {down_s} s with {after}")
        if before is not None and after is not None:
            lost = before.touchpoints - after.touchpoints
            notes.append(f"touchpoints lost by the restart: {lost}")

        outcome = collect_outcome(settings, expected, [worker], timeout_s=180)
        replay.join(60)
        print("\n".join(notes))
        assert "retrying" in worker.log_text(), "the worker never saw Redis down; the test proves nothing"
        return outcome, worker, notes
    finally:
        server.close()


def test_redis_sigterm_with_aof_always(tmp_path: Path, kafka_bootstrap: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """Redis with appendfsync always stops cleanly mid-stream and comes back 5 s later on the same port."""
    outcome, worker, _ = _redis_restart_scenario(tmp_path, kafka_bootstrap, fault_settings, workers, "always", "sigterm", 5.0)
    assert_exact(outcome)
    assert_clean_logs([worker])


def test_redis_sigkill_with_aof_everysec(tmp_path: Path, kafka_bootstrap: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """Redis with appendfsync everysec is SIGKILLed mid-stream and restarted 3 s later.

    A killed process loses nothing that it wrote to the AOF file: the written pages stay in
    the OS page cache, and Redis writes a command to the file before it replies. Only a
    crash of the machine loses the last second; see test_redis_losing_last_writes.
    """
    outcome, worker, _ = _redis_restart_scenario(tmp_path, kafka_bootstrap, fault_settings, workers, "everysec", "sigkill", 3.0)
    assert_exact(outcome)
    assert_clean_logs([worker])


@pytest.mark.parametrize("down_s", [5.0, 0.0], ids=["down-5s", "down-0s"])
def test_redis_losing_last_writes(
    down_s: float, tmp_path: Path, kafka_bootstrap: str, fault_settings: FaultSettings, workers: Workers
) -> None:
    """Redis comes back with the AOF as it was 1.5 s before it died, as after a power loss with everysec.

    The worker has consumed, and Kafka may have committed, the messages of those 1.5 s, but
    Redis no longer has their writes, so the stored offsets trail the consumer's position.
    The fenced write notices that, and the worker reads those messages again: the final
    figures equal the clean run's.
    """
    dataset = load_dataset()
    server = AofRedis(tmp_path / "redis", "everysec")
    server.start()
    try:
        settings = fault_settings(kafka_bootstrap, server.url)
        expected = expected_figures(dataset, settings)
        worker = workers.start(settings)
        replay = ReplayThread(settings, dataset, RATE_PER_S).start()
        third = expected.stats.conversions_done // 3
        assert wait_progress(lambda: conversions_done(settings) >= third, 120, [worker]), "no progress before the fault"

        server.snapshot_aof(tmp_path / "aof-snapshot")
        at_snapshot = safe_stats(settings)
        time.sleep(1.5)
        at_crash = safe_stats(settings)
        server.kill()
        server.restore_aof(tmp_path / "aof-snapshot")
        time.sleep(down_s)
        server.start()
        after = safe_stats(settings)
        print(f"at snapshot {at_snapshot}\nat crash {at_crash}\nafter restart {after}")

        outcome = collect_outcome(settings, expected, [worker], timeout_s=90)
        replay.join(60)
        log_lines = worker.log_text().splitlines()
        detections = [line for line in log_lines if "Redis lost writes" in line or "reading the" in line]
        rewinds = [line for line in log_lines if "message(s) again from" in line]
        print("\n".join(outcome.problems[:8] + detections[:4] + rewinds[:4]))
        assert detections, "the worker did not notice that Redis lost writes"
        assert rewinds, "the worker did not read the lost messages again"
        assert_exact(outcome)
    finally:
        server.close()


def test_broker_frozen_for_10_s(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """SIGSTOP the broker for 10 s mid-stream, then SIGCONT. The test starts its own broker, because others share the session's."""
    dataset = load_dataset()
    with EmbeddedBroker() as broker:
        settings = fault_settings(broker.bootstrap, redis_url)
        expected = expected_figures(dataset, settings)
        worker = workers.start(settings)
        replay = ReplayThread(settings, dataset, RATE_PER_S).start()
        third = expected.stats.conversions_done // 3
        assert wait_progress(lambda: conversions_done(settings) >= third, 120, [worker]), "no progress before the fault"

        paused_with = conversions_done(settings)
        broker.pause()
        time.sleep(10.0)
        broker.resume()
        print(f"broker paused for 10 s at {replay.elapsed_s:.1f} s with {paused_with} conversions done")

        outcome = collect_outcome(settings, expected, [worker], timeout_s=240)
        replay.join(120)
        try:
            assert_exact(outcome)
            assert_clean_logs([worker])
        finally:
            workers.stop_all()


def test_workers_join_and_leave_mid_stream(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """Start a second and a third worker in the group while the stream runs, then stop the second."""
    settings = fault_settings(kafka_bootstrap, redis_url)
    dataset = load_dataset()
    expected = expected_figures(dataset, settings)
    first = workers.start(settings, "first")
    replay = ReplayThread(settings, dataset, RATE_PER_S).start()
    events: list[str] = []

    assert wait_progress(lambda: replay.elapsed_s >= 10, 30, [first])
    second = workers.start(settings, "second")
    events.append(f"second started at {replay.elapsed_s:.1f} s, {conversions_done(settings)} conversions done")
    assert wait_progress(lambda: replay.elapsed_s >= 25, 30, [first, second])
    third = workers.start(settings, "third")
    events.append(f"third started at {replay.elapsed_s:.1f} s, {conversions_done(settings)} conversions done")
    assert wait_progress(lambda: replay.elapsed_s >= 45, 30, [first, second, third])
    assert second.stop() == 0, second.log_tail()
    events.append(f"second stopped at {replay.elapsed_s:.1f} s, {conversions_done(settings)} conversions done")
    assert not replay.done, f"the replay ended before the second worker stopped: {events}"

    outcome = collect_outcome(settings, expected, [first, third], timeout_s=300)
    replay.join(60)
    print("\n".join(events))
    assert_exact(outcome)
    assert_clean_logs(workers.started)
    for worker in (first, second, third):
        assert "partitions assigned" in worker.log_text(), f"{worker.log_path.name} never got partitions"


def _poison_messages(settings: Any) -> list[tuple[str, bytes | None, bytes | None, set[str]]]:
    """Return (topic, key, value, accepted reasons) of each poison message."""
    big_click = {
        "type": "click", "event_id": "poison-big", "event_time": "2026-11-03T00:00:00Z", "user_id": "poison-big",
        "campaign_id": "alpha", "channel": "alpha", "utm_content": "x" * (900 * 1024),
    }
    nested_arrays = b"[" * 10_000 + b"]" * 10_000
    nested_field = (
        b'{"type": "purchase", "event_id": "poison-nested", "event_time": "2026-11-03T00:00:00Z", '
        b'"user_id": "poison-nested", "order_id": "o", "amount": "1", "currency": "EUR", "coupon_code": '
        + b'{"a": ' * 10_000 + b"1" + b"}" * 10_000 + b"}"
    )
    bad_utf8 = (
        b'{"type": "purchase", "event_id": "poison-\xff\xfe", "event_time": "2026-11-03T00:00:00Z", '
        b'"user_id": "poison-utf8", "order_id": "o", "amount": "1", "currency": "EUR"}'
    )
    huge_field = {
        "type": "purchase", "event_id": "poison-huge", "event_time": "2026-11-03T00:00:00Z", "user_id": "poison-huge",
        "order_id": "poison-huge", "amount": "1", "currency": "EUR", "user_agent": "A" * (10 * 1024 * 1024),
    }
    return [
        (settings.topic_touchpoints, b"poison-big", orjson.dumps(big_click), {"invalid"}),
        (settings.topic_touchpoints, b"poison-arrays", nested_arrays, {"undecodable"}),
        (settings.topic_conversions, b"poison-nested", nested_field, {"undecodable"}),
        (settings.topic_conversions, b"poison-utf8", bad_utf8, {"undecodable"}),
        (settings.topic_touchpoints, b"\xff\xfe\xfd", b'{"type": "teleport", "event_id": "poison-key"}', {"unknown_type"}),
        (settings.topic_conversions, b"poison-null", None, {"undecodable"}),
        (settings.topic_conversions, b"poison-huge", orjson.dumps(huge_field), {"invalid"}),
    ]


def test_poison_messages_mid_stream(kafka_bootstrap: str, redis_url: str, fault_settings: FaultSettings, workers: Workers) -> None:
    """Oversized, deeply nested, invalid UTF-8 and empty messages land in dead-letters; the figures stay exact."""
    settings = fault_settings(kafka_bootstrap, redis_url)
    dataset = load_dataset()
    expected = expected_figures(dataset, settings)
    worker = workers.start(settings)
    replay = ReplayThread(settings, dataset, RATE_PER_S).start()
    third = expected.stats.conversions_done // 3
    assert wait_progress(lambda: conversions_done(settings) >= third, 120, [worker]), "no progress before the poison"

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=16 * 1024 * 1024,
                             enable_idempotence=False)
    poisons = _poison_messages(settings)
    try:
        for topic, key, value, _ in poisons:
            producer.send(topic, key=key, value=value).get(timeout=60)
    finally:
        producer.close()
    produced_at = replay.elapsed_s

    outcome = collect_outcome(settings, expected, [worker], timeout_s=240, extra_dead_letters=len(poisons))
    replay.join(60)
    print(f"{len(poisons)} poison messages produced by {produced_at:.1f} s; dead letters: "
          + ", ".join(f"{letter['reason']}@{letter['source_topic'].split('-')[0]}" for letter in outcome.dead_letters))
    assert_exact(outcome, allow_dead_letters=len(poisons))

    letters = sorted(outcome.dead_letters, key=lambda letter: (letter["source_topic"], letter["source_offset"]))
    by_reason = sorted(letter["reason"] for letter in letters)
    assert by_reason == sorted(next(iter(reasons)) for *_, reasons in poisons)
    for letter in letters:
        assert letter["errors"], letter
        assert letter["errors"][0]["reason"], letter
        assert len(letter["payload"]) <= settings.dead_letter_payload_max_bytes, "the payload is cut to the limit"
    assert_clean_logs([worker])
