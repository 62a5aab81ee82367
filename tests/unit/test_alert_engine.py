"""The alert engine: stale updates, rule selection, clock ticks, and the Alert records it builds."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from roitrack.alerts.consumer import AlertConsumer
from roitrack.alerts.engine import AlertEngine, Changes
from roitrack.alerts.rules import RuleSet, load_rules
from roitrack.alerts.state import StateKey
from roitrack.settings import load_settings
from schemas.outputs import Alert
from tests.unit.alert_updates import T0, roi_update

RULES = """
[[webhooks]]
name = "team"
url = "http://127.0.0.1:9/hook"

[[rules]]
id = "roi"
kind = "roi_below"
window = "lifetime"
threshold = 0
cooldown_s = 600
webhooks = ["team"]

[[rules]]
id = "roi-1h-spring"
kind = "roi_below"
window = "1h"
threshold = 0
campaigns = ["spring"]

[[rules]]
id = "spend"
kind = "spend_without_conversions"
window = "lifetime"
for_s = 300
"""


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return load_rules(path, load_settings())


def test_stale_and_repeated_updates_ignored(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    changes = Changes()

    engine.apply(roi_update(5, roi="-1"), 0, T0, changes)
    engine.apply(roi_update(3, roi="1"), 0, T0, changes)
    engine.apply(roi_update(5, roi="1"), 0, T0, changes)

    assert [alert.alert.state for alert in changes.alerts] == ["fired"]
    assert engine.stats["updates_stale"] == 2
    assert engine.sequences == {"lifetime|spring": 5}
    assert changes.sequences == {"lifetime|spring": 5}

    engine.apply(roi_update(6, roi="1"), 0, T0, changes)

    assert [alert.alert.state for alert in changes.alerts] == ["fired", "resolved"]
    assert changes.alerts[1].alert.update_sequence == 6


def test_sequences_kept_per_window(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    changes = Changes()

    engine.apply(roi_update(4, window="1h", window_end_s=0), 0, T0, changes)
    engine.apply(roi_update(4, window="lifetime"), 0, T0, changes)

    assert engine.stats["updates_applied"] == 2
    assert engine.sequences == {"1h|spring": 4, "lifetime|spring": 4}


def test_unwatched_updates_not_tracked(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    changes = Changes()

    engine.apply(roi_update(1, window="7d", window_end_s=0), 0, T0, changes)
    engine.apply(roi_update(1, window="1h", campaign="summer", window_end_s=0), 0, T0, changes)

    assert engine.stats["updates_unwatched"] == 2
    assert changes.empty


def test_alert_record_fields(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    changes = Changes()

    engine.apply(roi_update(2, at_s=30, roi="-0.25", spend="120"), 3, T0 + timedelta(seconds=31), changes)

    fired = [new for new in changes.alerts if new.alert.rule_id == "roi"]
    assert len(fired) == 1
    new = fired[0]
    alert = new.alert
    assert new.partition == 3
    assert new.webhooks == ("team",)
    assert alert.state == "fired"
    assert alert.rule_kind == "roi_below"
    assert alert.metric == "roi"
    assert alert.campaign_id == "spring"
    assert alert.campaign_name == "spring campaign"
    assert alert.window == "lifetime"
    assert alert.model == "last_touch"
    assert alert.observed == Decimal("-0.25")
    assert alert.threshold == Decimal(0)
    assert alert.spend == Decimal(120)
    assert alert.currency == "EUR"
    assert alert.update_sequence == 2
    assert alert.breach_started_at == T0 + timedelta(seconds=30)
    assert alert.observed_at == T0 + timedelta(seconds=30)
    assert alert.emitted_at == T0 + timedelta(seconds=31)
    assert alert.message_en == "Campaign spring: ROI -0.25 is below 0.00 (lifetime, last touch)."
    assert alert.message_nl == "Campagne spring: ROI -0,25 ligt onder 0,00 (hele looptijd, laatste contactmoment)."
    assert Alert.model_validate_json(alert.model_dump_json()) == alert
    assert orjson.loads(alert.model_dump_json())["observed"] == "-0.25"


def test_same_updates_give_same_alert_ids(rules: RuleSet) -> None:
    updates = [roi_update(1, roi="1"), roi_update(2, at_s=5, roi="-1"), roi_update(3, at_s=9, roi="1")]
    runs = []
    for emitted_offset_s in (0, 3600):
        engine = AlertEngine(rules)
        changes = Changes()
        for update in updates:
            engine.apply(update, 0, T0 + timedelta(seconds=emitted_offset_s), changes)
        runs.append([(new.alert.alert_id, new.alert.breach_id, new.alert.state) for new in changes.alerts])

    assert runs[0] == runs[1]
    assert [state for _, _, state in runs[0]] == ["fired", "resolved"]
    assert runs[0][0][1] == runs[0][1][1]
    assert runs[0][0][0] != runs[0][1][0]


def test_tick_fires_only_on_assigned_partitions(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    engine.apply(roi_update(1, at_s=0, spend="10", conversions="0", cpa=None, roi="0.5"), 2, T0, Changes())
    later = T0 + timedelta(seconds=301)

    elsewhere = Changes()
    engine.tick(later, {0, 1}, elsewhere)
    here = Changes()
    engine.tick(later, {2}, here)
    again = Changes()
    engine.tick(later + timedelta(seconds=60), {2}, again)

    assert elsewhere.empty
    assert [(new.alert.rule_id, new.alert.state) for new in here.alerts] == [("spend", "fired")]
    assert here.alerts[0].alert.observed == Decimal(301)
    assert here.alerts[0].alert.message_en == (
        "Campaign spring: 10.00 EUR spent without conversions for 5 min (lifetime, last touch)."
    )
    assert here.alerts[0].alert.message_nl == (
        "Campagne spring: 10,00 EUR uitgegeven zonder conversies, al 5 min (hele looptijd, laatste contactmoment)."
    )
    assert list(here.states) == [StateKey("spend", "spring", "lifetime")]
    assert again.empty


def test_load_ignores_state_of_removed_rules(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    source = AlertEngine(rules)
    source.apply(roi_update(1, roi="-1"), 0, T0, Changes())
    states = dict(source.states)
    removed = StateKey("gone", "spring", "lifetime")
    states[removed] = states[StateKey("roi", "spring", "lifetime")]

    engine.load(states, {"lifetime|spring": 1})

    assert removed not in engine.states
    assert StateKey("roi", "spring", "lifetime") in engine.states
    assert engine.sequences == {"lifetime|spring": 1}


def test_huge_figure_resolves_with_summary(rules: RuleSet) -> None:
    engine = AlertEngine(rules)
    changes = Changes()
    engine.apply(roi_update(1, roi="-1"), 0, T0, changes)

    # 29 integer digits: valid, but more than the default decimal context rounds to cents.
    engine.apply(roi_update(2, at_s=60, roi="1e28"), 0, T0 + timedelta(seconds=60), changes)

    states = [(new.alert.rule_id, new.alert.state) for new in changes.alerts]
    assert states == [("roi", "fired"), ("roi", "resolved")]
    resolved = changes.alerts[1].alert
    assert resolved.observed == Decimal("1e28")
    assert resolved.message_en == (
        "Campaign spring: ROI 10000000000000000000000000000.00 is back at or above 0.00 (lifetime, last touch)."
    )


# --- the consumer's decoding of roi-updates messages ---------------------------------------


def poison_update(**figures: Any) -> bytes:
    """Encode a lifetime update of campaign spring whose top-level figures are replaced by ``figures``."""
    value = roi_update(3).model_dump(mode="json")
    value.update(figures)
    # json, not orjson: orjson rejects integers beyond 64 bits, which a sender may still write.
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("payload", "field", "shown"),
    [
        (poison_update(roi="abc"), "roi", "'abc'"),
        (poison_update(roi="1e999999"), "roi", "'1e999999'"),
        (poison_update(roi="-1E+30"), "roi", "'-1E+30'"),
        (poison_update(spend="1e-999999"), "spend", "'1e-999999'"),
        (poison_update(cpa=10**40), "cpa", "more than 30 integer digits"),
        (b"{}", "campaign_id", None),
        (b"not json", "(message)", None),
    ],
    ids=["not-a-number", "huge-exponent", "30-integer-digits", "tiny-exponent", "huge-integer", "empty", "not-json"],
)
def test_consumer_skips_invalid_update(
    rules: RuleSet, caplog: pytest.LogCaptureFixture, payload: bytes, field: str, shown: str | None
) -> None:
    consumer = AlertConsumer(load_settings(), rules, "unit-test-alerts", threading.Event())
    record = SimpleNamespace(value=payload, partition=2, offset=41)

    try:
        with caplog.at_level(logging.WARNING, logger="roitrack.alerts.consumer"):
            decoded = consumer._decode(record)
    finally:
        consumer.redis.close()

    assert decoded is None
    assert consumer.engine.stats["updates_invalid"] == 1
    assert "skipped 1 invalid RoiUpdate message(s)" in caplog.text
    assert "partition=2 offset=41" in caplog.text
    assert f": {field}: " in caplog.text
    if shown is not None:
        assert shown in caplog.text
