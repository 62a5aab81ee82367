"""Pure evaluation of the alert rules: conditions, baseline, cool-down and stable ids."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from roitrack.alerts.evaluate import (
    Observation,
    Run,
    advance_run,
    drop_limit,
    run_elapsed_s,
    sudden_drop,
    trailing_mean,
    update_time_ms,
)
from roitrack.alerts.rules import (
    CpaAboveRule,
    RoiBelowRule,
    Rule,
    SpendWithoutConversionsRule,
    SuddenDropRule,
)
from roitrack.alerts.state import (
    Breach,
    RuleState,
    StateKey,
    Transition,
    advance,
    alert_id,
    apply_clock,
    apply_update,
    breach_id,
    state_from_json,
    state_to_json,
)
from schemas.outputs import RoiUpdate
from tests.unit.alert_updates import ms, roi_update


def roi_rule(**fields: Any) -> RoiBelowRule:
    return RoiBelowRule(**{"id": "roi", "kind": "roi_below", "window": "lifetime", "threshold": 0, "cooldown_s": 600, **fields})


def cpa_rule(**fields: Any) -> CpaAboveRule:
    return CpaAboveRule(**{"id": "cpa", "kind": "cpa_above", "window": "lifetime", "threshold": 20, "cooldown_s": 600, **fields})


def spend_rule(**fields: Any) -> SpendWithoutConversionsRule:
    return SpendWithoutConversionsRule(**{
        "id": "spend", "kind": "spend_without_conversions", "window": "lifetime", "for_s": 300, "cooldown_s": 600,
        **fields,
    })


def drop_rule(**fields: Any) -> SuddenDropRule:
    return SuddenDropRule(**{
        "id": "drop", "kind": "sudden_drop", "window": "lifetime", "metric": "roas", "drop_pct": 50,
        "baseline_updates": 3, "cooldown_s": 600, **fields,
    })


def run_updates(rule: Rule, updates: list[RoiUpdate]) -> tuple[RuleState | None, list[Transition | None]]:
    """Apply updates in order; return the final state and the transition of each update."""
    state: RuleState | None = None
    transitions: list[Transition | None] = []
    for update in updates:
        state, transition = apply_update(rule, state, update, partition=0)
        transitions.append(transition)
    return state, transitions


def kinds(transitions: list[Transition | None]) -> list[str | None]:
    return [None if transition is None else transition.state for transition in transitions]


# --- conditions --------------------------------------------------------------


def test_roi_below_fires_once_then_resolves() -> None:
    updates = [
        roi_update(1, at_s=0, roi="0.10"),
        roi_update(2, at_s=10, roi="-0.20"),
        roi_update(3, at_s=20, roi="-0.30"),
        roi_update(4, at_s=30, roi="0.00"),
    ]

    _, transitions = run_updates(roi_rule(), updates)

    assert kinds(transitions) == [None, "fired", None, "resolved"]
    fired, resolved = transitions[1], transitions[3]
    assert fired is not None
    assert resolved is not None
    assert fired.observation.observed == Decimal("-0.20")
    assert fired.observation.threshold == Decimal(0)
    assert resolved.breach == fired.breach == Breach(2, ms(10))
    assert resolved.observation.observed == Decimal("0.00")


def test_roi_null_keeps_state() -> None:
    updates = [roi_update(1, roi="-1"), roi_update(2, at_s=5, roi=None), roi_update(3, at_s=9, roi="1")]

    state, transitions = run_updates(roi_rule(), updates)

    assert kinds(transitions) == ["fired", None, "resolved"]
    assert state is not None
    assert state.phase == "ok"


def test_roi_reads_rule_model() -> None:
    update = roi_update(1, roi="-1")
    models = {name: figures.model_copy(update={"roi": Decimal("0.5")}) for name, figures in update.models.items()}
    models["linear"] = models["linear"].model_copy(update={"roi": Decimal("-0.5")})
    update = update.model_copy(update={"models": models})

    _, last_touch = run_updates(roi_rule(), [update])
    _, linear = run_updates(roi_rule(model="linear"), [update])

    assert kinds(last_touch) == [None]
    assert kinds(linear) == ["fired"]


def test_cpa_above_strictly() -> None:
    updates = [
        roi_update(1, cpa="20"),
        roi_update(2, at_s=1, cpa="20.01"),
        roi_update(3, at_s=2, cpa=None, conversions="0"),
        roi_update(4, at_s=3, cpa="19"),
    ]

    _, transitions = run_updates(cpa_rule(), updates)

    assert kinds(transitions) == [None, "fired", None, "resolved"]


def test_spend_run_fires_after_period() -> None:
    updates = [
        roi_update(1, at_s=0, spend="0", conversions="0", cpa=None, roi=None, roas=None),
        roi_update(2, at_s=100, spend="50", conversions="0", cpa=None),
        roi_update(3, at_s=250, spend="80", conversions="0", cpa=None),
        roi_update(4, at_s=400, spend="90", conversions="0", cpa=None),
        roi_update(5, at_s=500, spend="95", conversions="0", cpa=None),
        roi_update(6, at_s=600, spend="99", conversions="1"),
    ]

    _, transitions = run_updates(spend_rule(), updates)

    assert kinds(transitions) == [None, None, None, "fired", None, "resolved"]
    fired, resolved = transitions[3], transitions[5]
    assert fired is not None
    assert resolved is not None
    assert fired.breach == Breach(2, ms(100))
    assert fired.observation.observed == Decimal(300)
    assert fired.observation.threshold == Decimal(300)
    assert resolved.observation.breached is False


def test_spend_run_ends_when_spend_stops() -> None:
    updates = [
        roi_update(1, at_s=0, spend="10", conversions="0", cpa=None),
        roi_update(2, at_s=200, spend="0", conversions="0", cpa=None, roi=None, roas=None),
        roi_update(3, at_s=400, spend="10", conversions="0", cpa=None),
        roi_update(4, at_s=600, spend="20", conversions="0", cpa=None),
    ]

    state, transitions = run_updates(spend_rule(), updates)

    # The run restarted at sequence 3, so 200 s have passed, not 600 s.
    assert kinds(transitions) == [None, None, None, None]
    assert state is not None
    assert state.run == Run(3, ms(400))


def test_spend_for_zero_fires_on_first_update() -> None:
    _, transitions = run_updates(spend_rule(for_s=0), [roi_update(1, spend="5", conversions="0", cpa=None)])

    assert kinds(transitions) == ["fired"]


def test_advance_run() -> None:
    assert advance_run(None, False, 1, 0) is None
    assert advance_run(None, True, 4, 100) == Run(4, 100)
    assert advance_run(Run(4, 100), True, 5, 900) == Run(4, 100)
    assert advance_run(Run(4, 100), False, 6, 1000) is None


def test_run_elapsed_whole_seconds() -> None:
    assert run_elapsed_s(None, 10_000) == 0
    assert run_elapsed_s(Run(1, 1_000), 3_999) == 2
    assert run_elapsed_s(Run(1, 5_000), 1_000) == 0


# --- sudden drop ---------------------------------------------------------------


def test_trailing_mean() -> None:
    history = (Decimal(1), Decimal(2), Decimal(3), Decimal(6))

    assert trailing_mean(history, 3) == Decimal(11) / 3
    assert trailing_mean(history, 4) == Decimal(3)
    assert trailing_mean(history, 5) is None
    assert trailing_mean((), 1) is None


def test_drop_limit() -> None:
    assert drop_limit(Decimal(4), Decimal(50)) == Decimal(2)
    assert drop_limit(Decimal(4), Decimal(100)) == Decimal(0)
    assert drop_limit(Decimal(10), Decimal("12.5")) == Decimal("8.75")


def test_drop_needs_full_history() -> None:
    rule = drop_rule()
    history: tuple[Decimal, ...] = ()
    observations = []
    for value in ("4", "4", "0.1"):
        observation, history = sudden_drop(rule, Decimal(value), history)
        observations.append(observation)

    assert [observation.breached for observation in observations] == [False, False, False]
    assert history == (Decimal(4), Decimal(4), Decimal("0.1"))


def test_drop_compares_with_mean_of_previous_values() -> None:
    rule = drop_rule()
    history = (Decimal(3), Decimal(4), Decimal(5))

    just_above, kept = sudden_drop(rule, Decimal(2), history)
    below, frozen = sudden_drop(rule, Decimal("1.99"), history)

    assert just_above.breached is False
    assert just_above.baseline == Decimal(4)
    assert just_above.threshold == Decimal(2)
    assert kept == (Decimal(4), Decimal(5), Decimal(2))
    assert below.breached is True
    assert below.observed == Decimal("1.99")
    assert frozen == history


def test_drop_ignores_non_positive_baseline() -> None:
    rule = drop_rule(metric="roi")
    history = (Decimal("-0.2"), Decimal("-0.1"), Decimal("0"))

    observation, kept = sudden_drop(rule, Decimal("-5"), history)

    assert observation.breached is False
    assert kept[-1] == Decimal("-5")


def test_drop_null_value_changes_nothing() -> None:
    history = (Decimal(3), Decimal(4), Decimal(5))

    observation, kept = sudden_drop(drop_rule(), None, history)

    assert observation.breached is None
    assert kept == history


def test_drop_fires_and_resolves_on_recovery() -> None:
    roas = ["3", "3", "3", "1", "1.2", "2.9"]
    updates = [roi_update(index + 1, at_s=index * 10, roas=value) for index, value in enumerate(roas)]

    state, transitions = run_updates(drop_rule(), updates)

    # The baseline stays 3 while breached, so 1.2 is still a drop and 2.9 is a recovery.
    assert kinds(transitions) == [None, None, None, "fired", None, "resolved"]
    fired = transitions[3]
    assert fired is not None
    assert fired.observation.baseline == Decimal(3)
    assert fired.observation.threshold == Decimal("1.5")
    assert state is not None
    assert state.history == (Decimal(3), Decimal(3), Decimal("2.9"))


# --- cool-down -------------------------------------------------------------------


def test_new_breach_within_cooldown_suppressed() -> None:
    updates = [
        roi_update(1, at_s=0, roi="-1"),
        roi_update(2, at_s=100, roi="1"),
        roi_update(3, at_s=200, roi="-1"),
        roi_update(4, at_s=300, roi="-1"),
        roi_update(5, at_s=700, roi="-1"),
        roi_update(6, at_s=800, roi="1"),
    ]

    state, transitions = run_updates(roi_rule(cooldown_s=600), updates)

    assert kinds(transitions) == ["fired", "resolved", None, None, "fired", "resolved"]
    second = transitions[4]
    assert second is not None
    # The suppressed breach began at sequence 3 and fired when the cool-down ended.
    assert second.breach == Breach(3, ms(200))
    assert state is not None
    assert state.cooldown_until_ms == ms(700 + 600)


def test_suppressed_breach_that_clears_sends_nothing() -> None:
    updates = [
        roi_update(1, at_s=0, roi="-1"),
        roi_update(2, at_s=10, roi="1"),
        roi_update(3, at_s=20, roi="-1"),
        roi_update(4, at_s=30, roi="1"),
    ]

    state, transitions = run_updates(roi_rule(), updates)

    assert kinds(transitions) == ["fired", "resolved", None, None]
    assert state is not None
    assert state.phase == "ok"
    assert state.breach is None


def test_advance_without_decision_keeps_state() -> None:
    state = RuleState(partition=0, campaign_name=None, currency="EUR", sequence=1, spend=Decimal(1), phase="firing",
                      breach=Breach(1, 0))

    after, transition = advance(state, Observation(None, None, Decimal(0)), 10, Breach(2, 10), 60)

    assert after == state
    assert transition is None


# --- wall clock ----------------------------------------------------------------------


def test_clock_fires_spend_run_without_updates() -> None:
    rule = spend_rule()
    state, transitions = run_updates(rule, [roi_update(1, at_s=0, spend="10", conversions="0", cpa=None)])
    assert state is not None
    assert kinds(transitions) == [None]

    early, nothing = apply_clock(rule, state, ms(299))
    late, fired = apply_clock(rule, state, ms(300))
    again, repeated = apply_clock(rule, late, ms(400))

    assert nothing is None

    assert early == state
    assert fired is not None
    assert fired.state == "fired"
    assert fired.breach == Breach(1, ms(0))
    assert fired.observed_ms == ms(300)
    assert repeated is None
    assert again == late


def test_clock_fires_suppressed_breach_after_cooldown() -> None:
    rule = roi_rule(cooldown_s=600)
    updates = [roi_update(1, at_s=0, roi="-1"), roi_update(2, at_s=10, roi="1"), roi_update(3, at_s=20, roi="-1")]
    state, transitions = run_updates(rule, updates)
    assert state is not None
    assert state.phase == "suppressed"

    _, early = apply_clock(rule, state, ms(599))
    after, fired = apply_clock(rule, state, ms(600))

    assert early is None
    assert fired is not None
    assert fired.breach == Breach(3, ms(20))
    assert after.phase == "firing"


def test_clock_ignored_for_event_time_rules() -> None:
    rule = spend_rule(clock="window_end", window="1h")
    update = roi_update(1, at_s=0, window="1h", window_end_s=0, spend="10", conversions="0", cpa=None)
    state, _ = run_updates(rule, [update])
    assert state is not None

    _, transition = apply_clock(rule, state, ms(10_000))

    assert transition is None


def test_update_time_follows_clock() -> None:
    update = roi_update(1, at_s=50, window="1h", window_end_s=7)

    assert update_time_ms(spend_rule(), update) == ms(50)
    assert update_time_ms(spend_rule(window="1h", clock="window_end"), update) == ms(7)


# --- ids and encoding -----------------------------------------------------------------


def test_ids_stable_and_distinct() -> None:
    key = StateKey("roi", "spring", "24h")

    first = breach_id(key, Breach(7, 0))

    assert first == breach_id(key, Breach(7, 123))
    assert len(first) == 32
    assert first != breach_id(key, Breach(8, 0))
    assert first != breach_id(StateKey("roi", "spring", "1h"), Breach(7, 0))
    assert first != breach_id(StateKey("roi", "summer", "24h"), Breach(7, 0))
    assert alert_id(first, "fired") == alert_id(first, "fired")
    assert alert_id(first, "fired") != alert_id(first, "resolved")


def test_state_key_field_round_trip() -> None:
    key = StateKey("roi-1", "camp|with|bars", "lifetime")

    assert StateKey.from_field(key.field()) == key


@pytest.mark.parametrize("rule", [roi_rule(), spend_rule(), drop_rule()], ids=["roi", "spend", "drop"])
def test_state_json_round_trip(rule: Rule) -> None:
    updates = [
        roi_update(1, at_s=0, roas="3", spend="10", conversions="0", cpa=None, roi="-0.5"),
        roi_update(2, at_s=10, roas="3"),
        roi_update(3, at_s=20, roas="3", roi="-0.1"),
        roi_update(4, at_s=30, roas="0.5", spend="20", conversions="0", cpa=None),
    ]
    state, _ = run_updates(rule, updates)
    assert state is not None

    assert state_from_json(state_to_json(state)) == state


@pytest.mark.parametrize("threshold", ["-0.5", "0", "2"])
def test_roi_threshold_boundaries(threshold: str) -> None:
    rule = roi_rule(threshold=threshold)
    at = Decimal(threshold)

    _, equal = run_updates(rule, [roi_update(1, roi=str(at))])
    _, below = run_updates(rule, [roi_update(1, roi=str(at - Decimal("0.000001")))])

    assert kinds(equal) == [None]
    assert kinds(below) == ["fired"]
