"""bench.collector: a small run sends every event through the collector and a worker attributes every purchase."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.collector import main


def test_small_run_packs_and_drains(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    status = main([
        "--events", "600", "--windows", "0,0.05", "--concurrency", "32", "--rate", "400",
        "--kafka-bootstrap", kafka_bootstrap, "--redis-url", redis_url, "--out", str(tmp_path), "--timeout", "120",
    ])

    assert status == 0
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    unpacked, packed = results["windows"]
    events = results["workload"]["events"]
    assert unpacked["requests"] == packed["requests"] == events
    assert results["options"]["rate_per_s"] == 400
    assert packed["requests_per_s"] <= 440, "requests were sent faster than --rate"
    assert unpacked["kafka_messages"] == events
    assert packed["kafka_messages"] < events
    for figures in (unpacked, packed):
        assert figures["worker"]["matches_expected"] is True
        assert figures["worker"]["conversions_attributed"] > 0
