"""Build the Alert output record, with its one-line summaries in English and Dutch."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Context, Decimal

from roitrack.alerts.rules import (
    CpaAboveRule,
    RoiBelowRule,
    Rule,
    SpendWithoutConversionsRule,
    rule_metric,
)
from roitrack.alerts.state import RuleState, StateKey, Transition, alert_id, breach_id
from roitrack.i18n import model_name, text
from schemas.outputs import AMOUNT_MAX_INTEGER_DIGITS, Alert

_CENT = Decimal("0.01")
_CENT_CONTEXT = Context(prec=AMOUNT_MAX_INTEGER_DIGITS + 2)
_METRIC_NAMES_NL = {"roi": "ROI", "roas": "ROAS", "cpa": "CPA", "revenue": "omzet", "conversions": "conversies"}
_METRIC_NAMES_EN = {"roi": "ROI", "roas": "ROAS", "cpa": "CPA", "revenue": "revenue", "conversions": "conversions"}
_WINDOW_UNITS = frozenset("mhd")


def _window_nl(window: str) -> str:
    """Write a window label such as '24h' or 'lifetime' in Dutch: 'laatste 24 u', 'hele looptijd'."""
    if window == "lifetime":
        return text("window.lifetime", "nl").lower()
    count, unit = window[:-1], window[-1:]
    if count.isdigit() and unit in _WINDOW_UNITS:
        return text("window.rolling", "nl", count=count, unit=text(f"unit.{unit}", "nl")).lower()
    return window


def _moment(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)


def _number(value: Decimal | None, decimal_comma: bool = False) -> str:
    """Format a finite figure with two decimals for the summaries; '-' for a missing one.

    A figure with more integer digits than an Amount allows is written as
    1.00E+40 rather than in full. Validated updates and rules never have one.
    """
    if value is None:
        return "-"
    if value and value.adjusted() >= AMOUNT_MAX_INTEGER_DIGITS:
        text = format(value, ".2E")
    else:
        # The default 28-digit context cannot round 27 or more integer digits to cents.
        text = format(value.quantize(_CENT, rounding=ROUND_HALF_UP, context=_CENT_CONTEXT), "f")
    return text.replace(".", ",") if decimal_comma else text


def _duration(seconds: Decimal | None, hour_symbol: str = "h") -> str:
    """Format whole seconds as '90 s', '15 min', '6 h' or '2 d' (rounded down); Dutch writes hours as 'u'."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole >= 2 * 86400:
        return f"{whole // 86400} d"
    if whole >= 2 * 3600:
        return f"{whole // 3600} {hour_symbol}"
    if whole >= 2 * 60:
        return f"{whole // 60} min"
    return f"{whole} s"


def summaries(rule: Rule, key: StateKey, state: RuleState, transition: Transition) -> tuple[str, str]:
    """Write the English and the Dutch one-line summary of an alert."""
    observation = transition.observation
    context_en = f"({key.window}, {model_name(rule.model, 'en').lower()})"
    context_nl = f"({_window_nl(key.window)}, {model_name(rule.model, 'nl').lower()})"
    campaign = key.campaign_id
    fired = transition.state == "fired"
    value_en = _number(observation.observed)
    value_nl = _number(observation.observed, decimal_comma=True)
    limit_en = _number(observation.threshold)
    limit_nl = _number(observation.threshold, decimal_comma=True)

    if isinstance(rule, RoiBelowRule):
        if fired:
            return (f"Campaign {campaign}: ROI {value_en} is below {limit_en} {context_en}.",
                    f"Campagne {campaign}: ROI {value_nl} ligt onder {limit_nl} {context_nl}.")
        return (f"Campaign {campaign}: ROI {value_en} is back at or above {limit_en} {context_en}.",
                f"Campagne {campaign}: ROI {value_nl} ligt weer op of boven {limit_nl} {context_nl}.")
    if isinstance(rule, CpaAboveRule):
        currency = state.currency
        if fired:
            return (f"Campaign {campaign}: CPA {value_en} {currency} is above {limit_en} {currency} {context_en}.",
                    f"Campagne {campaign}: CPA {value_nl} {currency} ligt boven {limit_nl} {currency} {context_nl}.")
        return (f"Campaign {campaign}: CPA {value_en} {currency} is back at or below {limit_en} {currency} {context_en}.",
                f"Campagne {campaign}: CPA {value_nl} {currency} ligt weer op of onder {limit_nl} {currency} {context_nl}.")
    if isinstance(rule, SpendWithoutConversionsRule):
        duration = _duration(observation.observed)
        duration_nl = _duration(observation.observed, hour_symbol="u")
        if fired:
            spend_en = f"{_number(state.spend)} {state.currency}"
            spend_nl = f"{_number(state.spend, decimal_comma=True)} {state.currency}"
            return (f"Campaign {campaign}: {spend_en} spent without conversions for {duration} {context_en}.",
                    f"Campagne {campaign}: {spend_nl} uitgegeven zonder conversies, al {duration_nl} {context_nl}.")
        return (f"Campaign {campaign}: no longer spending without conversions, after {duration} {context_en}.",
                f"Campagne {campaign}: geen uitgaven zonder conversies meer, na {duration_nl} {context_nl}.")

    metric = rule_metric(rule)
    name_en = _METRIC_NAMES_EN.get(metric, metric)
    name_nl = _METRIC_NAMES_NL.get(metric, metric)
    baseline_en = _number(observation.baseline)
    baseline_nl = _number(observation.baseline, decimal_comma=True)
    percent = format(rule.drop_pct.normalize(), "f")
    if fired:
        return (
            f"Campaign {campaign}: {name_en} {value_en} dropped more than {percent}% below its recent mean "
            f"{baseline_en} {context_en}.",
            f"Campagne {campaign}: {name_nl} {value_nl} is meer dan {percent}% gedaald onder het recente "
            f"gemiddelde {baseline_nl} {context_nl}.",
        )
    return (
        f"Campaign {campaign}: {name_en} {value_en} is back within {percent}% of its recent mean {baseline_en} {context_en}.",
        f"Campagne {campaign}: {name_nl} {value_nl} ligt weer binnen {percent}% van het recente gemiddelde "
        f"{baseline_nl} {context_nl}.",
    )


def build_alert(rule: Rule, key: StateKey, state: RuleState, transition: Transition, emitted_at: datetime) -> Alert:
    """Build the Alert record of a transition. ``state`` is the rule's state after it."""
    breach = breach_id(key, transition.breach)
    message_en, message_nl = summaries(rule, key, state, transition)
    observation = transition.observation
    return Alert(
        alert_id=alert_id(breach, transition.state),
        breach_id=breach,
        rule_id=rule.id,
        rule_kind=rule.kind,
        state=transition.state,
        campaign_id=key.campaign_id,
        campaign_name=state.campaign_name,
        window=key.window,
        model=rule.model,
        metric=rule_metric(rule),
        observed=observation.observed,
        threshold=observation.threshold,
        baseline=observation.baseline,
        spend=state.spend,
        currency=state.currency,
        update_sequence=state.sequence,
        breach_started_at=_moment(transition.breach.started_ms),
        observed_at=_moment(transition.observed_ms),
        emitted_at=emitted_at,
        message_en=message_en,
        message_nl=message_nl,
    )
