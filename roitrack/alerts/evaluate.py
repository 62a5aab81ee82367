"""Pure evaluation of alert rules against one RoiUpdate: is the rule breached, and by how much.

Every function here is pure. The cool-down and the fired and resolved
messages are decided in ``roitrack.alerts.state`` from the ``Observation``
returned here.

The rules, for the figures of the rule's window and attribution model:

- ``roi_below``: breached when ROI < threshold.
- ``cpa_above``: breached when CPA > threshold.
- ``spend_without_conversions``: a *run* starts at the first update with
  spend > 0 and 0 conversions, and ends at the next update without that
  condition. The rule is breached once a run has lasted ``for_s`` seconds on
  the rule's clock, measured from the run's first update to the current
  update (or to the consumer's wall clock, see ``run_elapsed_s``).
- ``sudden_drop``: the baseline is the mean of the last ``baseline_updates``
  values of the metric observed while the rule was not breached. The rule is
  breached when the value is below baseline × (1 − drop_pct / 100). Breached
  values do not enter the history, so a lasting drop stays breached until the
  metric recovers. Until the history contains ``baseline_updates`` values, and
  while the baseline is 0 or below, the rule is not breached.

A metric that the update reports as null (ROI, ROAS or CPA without spend or
conversions) gives ``breached=None``: the rule keeps its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from roitrack.alerts.rules import (
    CpaAboveRule,
    RoiBelowRule,
    Rule,
    SpendWithoutConversionsRule,
    SuddenDropRule,
)
from schemas.outputs import ModelFigures, RoiUpdate

_MS_PER_S = 1000
_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Observation:
    """Outcome of one rule on one update.

    ``breached`` is None when the update cannot decide, for example when the
    metric is null. ``threshold`` is the limit the value was compared with;
    for ``sudden_drop`` that is the lowered baseline.
    """

    breached: bool | None
    observed: Decimal | None
    threshold: Decimal
    baseline: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """A stretch of updates with spend and without conversions: where it began."""

    sequence: int
    started_ms: int


def update_time_ms(rule: Rule, update: RoiUpdate) -> int:
    """Return the time of an update on the rule's clock, in epoch milliseconds.

    ``emitted_at`` is the ROI agent's wall clock at publication. ``window_end``
    is event time. The rules loader rejects ``window_end`` for the lifetime
    window, whose updates carry no window end, and an update without one falls
    back to ``emitted_at``.
    """
    moment = update.window_end if rule.clock == "window_end" and update.window_end is not None else update.emitted_at
    return int(moment.timestamp() * _MS_PER_S)


def figures_of(rule: Rule, update: RoiUpdate) -> ModelFigures | None:
    """Return the update's figures under the rule's model, or None when the update lacks that model."""
    return update.models.get(rule.model)


def roi_below(rule: RoiBelowRule, figures: ModelFigures) -> Observation:
    """Compare ROI with the threshold; breached when it is strictly lower."""
    if figures.roi is None:
        return Observation(None, None, rule.threshold)
    return Observation(figures.roi < rule.threshold, figures.roi, rule.threshold)


def cpa_above(rule: CpaAboveRule, figures: ModelFigures) -> Observation:
    """Compare CPA with the threshold; breached when it is strictly higher.

    CPA is null without conversions, so this rule cannot decide then; use
    ``spend_without_conversions`` for that case.
    """
    if figures.cpa is None:
        return Observation(None, None, rule.threshold)
    return Observation(figures.cpa > rule.threshold, figures.cpa, rule.threshold)


def is_spend_without_conversions(spend: Decimal, figures: ModelFigures) -> bool:
    """Return whether the window has spend and no conversions under the model."""
    return spend > 0 and figures.conversions == 0


def advance_run(run: Run | None, starved: bool, sequence: int, time_ms: int) -> Run | None:
    """Return the run after an update: new_history, started at this update, or ended."""
    if not starved:
        return None
    return run if run is not None else Run(sequence, time_ms)


def run_elapsed_s(run: Run | None, time_ms: int) -> Decimal:
    """Return the whole seconds from the run's start to ``time_ms`` (0 without a run or before its start)."""
    if run is None:
        return Decimal(0)
    return Decimal(max(0, time_ms - run.started_ms) // _MS_PER_S)


def spend_without_conversions(rule: SpendWithoutConversionsRule, run: Run | None, time_ms: int) -> Observation:
    """Decide the rule at ``time_ms`` for a run (None: the last update ended any run)."""
    elapsed_s = run_elapsed_s(run, time_ms)
    threshold = Decimal(rule.for_s)
    if run is None:
        return Observation(False, elapsed_s, threshold)
    return Observation(elapsed_s >= threshold, elapsed_s, threshold)


def drop_metric(rule: SuddenDropRule, figures: ModelFigures) -> Decimal | None:
    """Return the value of the rule's metric, or None when the update reports it as null."""
    value: Decimal | None = getattr(figures, rule.metric)
    return value


def trailing_mean(history: tuple[Decimal, ...], count: int) -> Decimal | None:
    """Return the mean of the last ``count`` values, or None while fewer are known."""
    if count < 1 or len(history) < count:
        return None
    recent = history[-count:]
    return sum(recent, Decimal(0)) / count


def drop_limit(baseline: Decimal, drop_pct: Decimal) -> Decimal:
    """Return the value below which a metric has dropped more than ``drop_pct`` percent from ``baseline``."""
    return baseline * (_HUNDRED - drop_pct) / _HUNDRED


def sudden_drop(
    rule: SuddenDropRule, value: Decimal | None, history: tuple[Decimal, ...]
) -> tuple[Observation, tuple[Decimal, ...]]:
    """Compare a value with the baseline of the history; return the observation and the new history.

    The history keeps at most ``baseline_updates`` values. A value is added
    unless it is breached, so the baseline does not follow a drop down.
    """
    baseline = trailing_mean(history, rule.baseline_updates)
    limit = drop_limit(baseline, rule.drop_pct) if baseline is not None else Decimal(0)
    if value is None:
        return Observation(None, None, limit, baseline), history

    new_history = (*history, value)[-rule.baseline_updates:]
    if baseline is None or baseline <= 0:
        return Observation(False, value, limit, baseline), new_history
    if value < limit:
        return Observation(True, value, limit, baseline), history
    return Observation(False, value, limit, baseline), new_history
