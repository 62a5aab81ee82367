"""`roitrack demo --synthetic` on the embedded default, checked against the generator's ground truth.

The demo starts its own tansu broker, as it does on a fresh clone, and uses
the session's Redis. The ground truth is computed again here from the same
seed, so the check does not rest on the demo's own comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import time

import orjson
import pytest

from roitrack.replay import Replayer
from roitrack.synthetic import compare, generate, ground_truth
from roitrack.synthetic_demo import SyntheticOptions, run_synthetic_demo
from tests.harness import REPO_ROOT

SEED = 11


def test_synthetic_demo_matches_ground_truth(redis_url: str, tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    truth_path = tmp_path / "truth.json"
    env = {
        **os.environ,
        "ROITRACK_KAFKA_BOOTSTRAP": "",
        "ROITRACK_REDIS_URL": redis_url,
        "ROITRACK_DATA_DIR": str(tmp_path / "faust"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "roitrack", "demo", "--synthetic", "--seed", str(SEED),
         "--summary", str(summary_path), "--ground-truth", str(truth_path), "--timeout", "240"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    truth = ground_truth(generate(SEED))
    written = orjson.loads(truth_path.read_bytes())
    assert written["campaigns"] == orjson.loads(orjson.dumps(truth))
    summary = orjson.loads(summary_path.read_bytes())["synthetic"]
    assert summary["differences"] == []
    assert compare(truth, summary["campaigns"]) == []

    family = summary["campaigns"]["family-deals"]
    statuses = {deal["deal_id"]: deal["status"] for deal in family["deals"]}
    assert statuses == {"sofa-group": "active", "bbq-group": "expired"}
    event_types = sorted((event["deal_id"], event["type"]) for event in summary["deal_events"])
    assert event_types == [
        ("bbq-group", "deal_expired"), ("sofa-group", "advocate_reward"), ("sofa-group", "deal_activated"),
    ]
    glow = summary["campaigns"]["glow-up"]["referrals"]
    assert glow["self_referrals_rejected"] == 1
    assert glow["repeat_referrals_rejected"] == 1
    for campaign in summary["campaigns"].values():
        assert campaign["engagement"]["total"] > 0
        assert campaign["referrals"]["new_customers"] > 0


def test_late_flush_keeps_deal_active(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A packed replay that sends its last buffers late still activates the sofa deal.

    Packed messages of a partition with few purchases used to wait for the
    replay's final flush while the touchpoints, hours later in event time, went
    out. Once the final flush is slower than the idle-release time, the person
    partitions' progress passed the deal's deadline before its last buyers
    arrived, and the deal expired. The replay now sends a deal purchase at once.
    """
    flush = Replayer.flush

    def late_flush(self: Replayer) -> None:
        time.sleep(6)
        flush(self)

    monkeypatch.setattr(Replayer, "flush", late_flush)
    monkeypatch.setenv("ROITRACK_KAFKA_BOOTSTRAP", "")
    monkeypatch.setenv("ROITRACK_REDIS_URL", redis_url)
    monkeypatch.setenv("ROITRACK_DATA_DIR", str(tmp_path / "faust"))
    summary_path = tmp_path / "summary.json"
    options = SyntheticOptions(
        seed=SEED, people=400, summary_path=summary_path, ground_truth_path=tmp_path / "truth.json",
        batch_size=50, rate_per_s=0.0, keep_state=False, timeout_s=120,
    )

    assert run_synthetic_demo(options) == 0
    summary = orjson.loads(summary_path.read_bytes())["synthetic"]
    statuses = {deal["deal_id"]: deal["status"] for deal in summary["campaigns"]["family-deals"]["deals"]}
    assert statuses == {"sofa-group": "active", "bbq-group": "expired"}
