"""The in-memory side of the alerts consumer: drop stale updates, evaluate the rules, collect the changes.

No I/O happens here. The consumer loop (``roitrack.alerts.consumer``) feeds
decoded updates and clock ticks in, then writes the collected ``Changes`` to
Redis and sends the alerts.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from roitrack.alerts.messages import build_alert
from roitrack.alerts.rules import Rule, RuleSet
from roitrack.alerts.state import RuleState, StateKey, Transition, apply_clock, apply_update
from roitrack.alerts.store import sequence_field
from schemas.outputs import Alert, RoiUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to send, with the partition of its campaign and the webhooks that receive it."""

    alert: Alert
    partition: int
    webhooks: tuple[str, ...]


@dataclass
class Changes:
    """Changes of one batch: states and sequence numbers to write, alerts to send."""

    states: dict[StateKey, RuleState] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    alerts: list[NewAlert] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.states and not self.sequences and not self.alerts


class AlertEngine:
    """Alert states and last sequence numbers of every rule, campaign and window, in memory.

    The caller must write the ``Changes`` of each call to Redis before it
    commits the Kafka offsets of the updates, and load the engine from Redis
    after every partition assignment.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.windows = {rule.window for rule in rules.rules}
        self.states: dict[StateKey, RuleState] = {}
        self.sequences: dict[str, int] = {}
        self.stats: Counter[str] = Counter()

    def load(self, states: dict[StateKey, RuleState], sequences: dict[str, int]) -> None:
        """Replace the in-memory state with the one read from Redis."""
        known = {rule.id for rule in self.rules.rules}
        orphans = sorted({key.rule_id for key in states if key.rule_id not in known})
        if orphans:
            log.warning(
                "Redis contains alert state of rule(s) %s, which are not in the rules file; that state is ignored",
                ", ".join(orphans),
            )
        self.states = {key: state for key, state in states.items() if key.rule_id in known}
        self.sequences = dict(sequences)

    def _watched_by(self, update: RoiUpdate) -> list[Rule]:
        return [
            rule for rule in self.rules.rules if rule.window == update.window and rule.watches(update.campaign_id)
        ]

    def apply(self, update: RoiUpdate, partition: int, now: datetime, changes: Changes) -> None:
        """Evaluate every rule that watches the update's campaign and window; skip a stale or repeated update."""
        rules = self._watched_by(update)
        if not rules:
            self.stats["updates_unwatched"] += 1
            return
        field_name = sequence_field(update.campaign_id, update.window)
        last = self.sequences.get(field_name, 0)
        if update.sequence <= last:
            self.stats["updates_stale"] += 1
            log.debug(
                "ignored stale update campaign=%s window=%s sequence=%d (last applied %d)",
                update.campaign_id, update.window, update.sequence, last,
            )
            return
        self.sequences[field_name] = update.sequence
        changes.sequences[field_name] = update.sequence
        self.stats["updates_applied"] += 1

        for rule in rules:
            key = StateKey(rule.id, update.campaign_id, update.window)
            state, transition = apply_update(rule, self.states.get(key), update, partition)
            self._record(rule, key, state, transition, now, changes)

    def tick(self, now: datetime, partitions: set[int], changes: Changes) -> None:
        """Evaluate the wall-clock conditions of the states whose campaigns are on ``partitions``."""
        now_ms = int(now.timestamp() * 1000)
        for key, state in list(self.states.items()):
            if state.partition not in partitions:
                continue
            rule = self.rules.rule(key.rule_id)
            if rule is None:
                continue
            changed, transition = apply_clock(rule, state, now_ms)
            if transition is not None:
                self._record(rule, key, changed, transition, now, changes)

    def _record(
        self,
        rule: Rule,
        key: StateKey,
        state: RuleState,
        transition: Transition | None,
        now: datetime,
        changes: Changes,
    ) -> None:
        if self.states.get(key) != state:
            self.states[key] = state
            changes.states[key] = state
        if transition is None:
            return
        alert = build_alert(rule, key, state, transition, now)
        changes.alerts.append(NewAlert(alert, state.partition, self.rules.webhooks_for(rule)))
        self.stats[f"alerts_{transition.state}"] += 1
