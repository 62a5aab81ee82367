"""Alert state of one rule, campaign and window, and its pure transitions: fire, cool-down, resolve.

Each (rule, campaign, window) is in one of three phases:

- ``ok``: the rule is not breached.
- ``firing``: a breach fired an alert. Further breached updates send nothing;
  the first update that is not breached sends the resolved alert.
- ``suppressed``: a breach began while the cool-down of the previous fired
  alert was still running. Nothing was sent. If the breach still holds when
  the cool-down ends, it fires then. If it clears first, it ends without a
  message.

The cool-down starts when an alert fires and lasts the rule's ``cooldown_s``
on the rule's clock. The state machine therefore fires a breach once, and the
same rule, campaign and window at most once per cool-down. Delivery can still
repeat an alert after a crash (see ``roitrack.alerts.consumer``).

Ids are stable: the breach id hashes the rule, campaign, window and the
sequence number of the update where the breach began, and the alert id hashes
the breach id and the state. The same updates therefore give the same ids,
also when they are evaluated again after a crash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from roitrack.alerts.evaluate import (
    Observation,
    Run,
    advance_run,
    cpa_above,
    drop_metric,
    figures_of,
    is_spend_without_conversions,
    roi_below,
    spend_without_conversions,
    sudden_drop,
    update_time_ms,
)
from roitrack.alerts.rules import CpaAboveRule, RoiBelowRule, Rule, SpendWithoutConversionsRule
from schemas.outputs import AlertState, RoiUpdate

Phase = Literal["ok", "firing", "suppressed"]
_MS_PER_S = 1000
_ID_HEX_DIGITS = 32


class StateKey(NamedTuple):
    """The rule, campaign and window of one alert state."""

    rule_id: str
    campaign_id: str
    window: str

    def field(self) -> str:
        """Return the Redis hash field. Rule ids and window labels contain no '|', so it splits back."""
        return f"{self.rule_id}|{self.window}|{self.campaign_id}"

    @classmethod
    def from_field(cls, field: str) -> "StateKey":
        rule_id, window, campaign_id = field.split("|", 2)
        return cls(rule_id, campaign_id, window)


@dataclass(frozen=True, slots=True)
class Breach:
    """Start of a breach: the sequence number of its first update and the time on the rule's clock."""

    sequence: int
    started_ms: int


@dataclass(frozen=True, slots=True)
class RuleState:
    """Alert state of one rule, campaign and window, with the context that its alerts report."""

    partition: int
    campaign_name: str | None
    currency: str
    #: Sequence number of the last update this rule read.
    sequence: int
    #: The window's spend in the last update.
    spend: Decimal
    #: The last observation that decided the rule (breached or not); clock-driven alerts report it.
    observation: Observation | None = None
    phase: Phase = "ok"
    #: The open breach, while firing or suppressed.
    breach: Breach | None = None
    #: No new alert fires before this time, in epoch ms on the rule's clock.
    cooldown_until_ms: int | None = None
    #: spend_without_conversions: the current run of updates with spend and no conversions.
    run: Run | None = None
    #: sudden_drop: recent values that were not breached, oldest first.
    history: tuple[Decimal, ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    """A message to send: the breach fired or resolved, with the observation that decided it."""

    state: AlertState
    breach: Breach
    observation: Observation
    observed_ms: int


def breach_id(key: StateKey, breach: Breach) -> str:
    """Return the id shared by the fired and resolved alerts of one breach."""
    text = "\x1f".join((key.rule_id, key.campaign_id, key.window, str(breach.sequence)))
    return hashlib.sha256(text.encode()).hexdigest()[:_ID_HEX_DIGITS]


def alert_id(breach: str, state: AlertState) -> str:
    """Return the id of one alert message: its breach id and its state."""
    return hashlib.sha256(f"{breach}\x1f{state}".encode()).hexdigest()[:_ID_HEX_DIGITS]


def advance(
    state: RuleState, observation: Observation, time_ms: int, origin: Breach, cooldown_s: int
) -> tuple[RuleState, Transition | None]:
    """Apply one observation to the phase and cool-down; return the new state and the message to send.

    ``origin`` is where a breach that begins now began: the current update,
    or for ``spend_without_conversions`` the first update of the run.
    """
    if observation.breached is None:
        return state, None
    state = replace(state, observation=observation)

    if state.phase == "firing" and state.breach is not None:
        if observation.breached:
            return state, None
        resolved = Transition("resolved", state.breach, observation, time_ms)
        return replace(state, phase="ok", breach=None), resolved

    if not observation.breached:
        return replace(state, phase="ok", breach=None), None

    breach = state.breach if state.phase == "suppressed" and state.breach is not None else origin
    if state.cooldown_until_ms is not None and time_ms < state.cooldown_until_ms:
        return replace(state, phase="suppressed", breach=breach), None
    fired = Transition("fired", breach, observation, time_ms)
    cooldown_until_ms = time_ms + cooldown_s * _MS_PER_S
    return replace(state, phase="firing", breach=breach, cooldown_until_ms=cooldown_until_ms), fired


def apply_update(
    rule: Rule, state: RuleState | None, update: RoiUpdate, partition: int
) -> tuple[RuleState, Transition | None]:
    """Evaluate the rule on an update of its campaign and window; return the new state and any message.

    The caller has already dropped stale and repeated updates by sequence number.
    """
    time_ms = update_time_ms(rule, update)
    current = RuleState(
        partition=partition,
        campaign_name=update.campaign_name,
        currency=update.currency,
        sequence=update.sequence,
        spend=update.spend,
    )
    if state is not None:
        current = replace(
            state, partition=partition, campaign_name=update.campaign_name, currency=update.currency,
            sequence=update.sequence, spend=update.spend,
        )
    figures = figures_of(rule, update)
    if figures is None:
        return current, None

    origin = Breach(update.sequence, time_ms)
    if isinstance(rule, RoiBelowRule):
        observation = roi_below(rule, figures)
    elif isinstance(rule, CpaAboveRule):
        observation = cpa_above(rule, figures)
    elif isinstance(rule, SpendWithoutConversionsRule):
        starved = is_spend_without_conversions(update.spend, figures)
        run = advance_run(current.run, starved, update.sequence, time_ms)
        current = replace(current, run=run)
        if run is not None:
            origin = Breach(run.sequence, run.started_ms)
        observation = spend_without_conversions(rule, run, time_ms)
    else:
        observation, history = sudden_drop(rule, drop_metric(rule, figures), current.history)
        current = replace(current, history=history)
    return advance(current, observation, time_ms, origin, rule.effective_cooldown_s)


def apply_clock(rule: Rule, state: RuleState, now_ms: int) -> tuple[RuleState, Transition | None]:
    """Evaluate the rule on the consumer's wall clock, between updates.

    Only rules on the ``emitted_at`` clock, which is also a wall clock, are
    evaluated. A run of ``spend_without_conversions`` fires once it has lasted
    ``for_s``, even when no further update arrives, and a suppressed breach
    fires once its cool-down has ended. The state is returned unchanged unless
    a message is due.
    """
    if rule.clock != "emitted_at":
        return state, None
    if isinstance(rule, SpendWithoutConversionsRule):
        if state.run is None:
            return state, None
        observation = spend_without_conversions(rule, state.run, now_ms)
        if not observation.breached:
            return state, None
        origin = Breach(state.run.sequence, state.run.started_ms)
    elif state.phase == "suppressed" and state.breach is not None and state.observation is not None:
        observation, origin = state.observation, state.breach
    else:
        return state, None
    changed, transition = advance(state, observation, now_ms, origin, rule.effective_cooldown_s)
    if transition is None:
        return state, None
    return changed, transition


def _observation_json(observation: Observation | None) -> dict[str, Any] | None:
    if observation is None:
        return None
    return {
        "breached": observation.breached,
        "observed": _text(observation.observed),
        "threshold": str(observation.threshold),
        "baseline": _text(observation.baseline),
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def state_to_json(state: RuleState) -> dict[str, Any]:
    """Encode a state for Redis: plain JSON types, decimals as text."""
    return {
        "partition": state.partition,
        "campaign_name": state.campaign_name,
        "currency": state.currency,
        "sequence": state.sequence,
        "spend": str(state.spend),
        "observation": _observation_json(state.observation),
        "phase": state.phase,
        "breach": None if state.breach is None else [state.breach.sequence, state.breach.started_ms],
        "cooldown_until_ms": state.cooldown_until_ms,
        "run": None if state.run is None else [state.run.sequence, state.run.started_ms],
        "history": [str(value) for value in state.history],
    }


def state_from_json(data: dict[str, Any]) -> RuleState:
    """Decode a state written by ``state_to_json``."""
    observation = data.get("observation")
    breach = data.get("breach")
    run = data.get("run")
    return RuleState(
        partition=int(data["partition"]),
        campaign_name=data.get("campaign_name"),
        currency=str(data["currency"]),
        sequence=int(data["sequence"]),
        spend=Decimal(data["spend"]),
        observation=None if observation is None else Observation(
            breached=observation["breached"],
            observed=_decimal(observation["observed"]),
            threshold=Decimal(observation["threshold"]),
            baseline=_decimal(observation["baseline"]),
        ),
        phase=data["phase"],
        breach=None if breach is None else Breach(int(breach[0]), int(breach[1])),
        cooldown_until_ms=data.get("cooldown_until_ms"),
        run=None if run is None else Run(int(run[0]), int(run[1])),
        history=tuple(Decimal(value) for value in data.get("history", ())),
    )
