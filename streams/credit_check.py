"""Checks of the credit messages that the ROI agent reads from the credits topic.

Credits come from roitrack's own attribution agent, but the topic is open to
any producer, so each one is checked before it touches an aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from schemas.decode import describe_value
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel, FieldError

#: Credits carry at most a converted Money amount (15 integer digits) times an exchange rate.
#: Anything larger is a malformed message, and it would overflow the metric rounding.
CREDIT_REVENUE_MAX_INTEGER_DIGITS = 21


def is_credit_batch(value: Any) -> bool:
    """Tell an array of credits (``streams.crediting.pack_credits``) from an array of facts by its first item."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and value[0].get("type") == "credit"


@dataclass(frozen=True, slots=True)
class CheckedCredit:
    """A credit that passed its checks, with its event time and figures parsed once."""

    value: dict[str, Any]
    time_ms: int
    weights: dict[AttributionModel, Decimal]
    revenue: dict[AttributionModel, Decimal]


def check_credit_item(item: Any) -> CheckedCredit | FieldError:
    """Check one item of a credit array, which must be a credit like a single credit message."""
    if isinstance(item, dict) and item.get("type") != "credit":
        return FieldError(field="type", value=describe_value(item.get("type")),
                          reason="an array of credits may contain only credits")
    return check_credit(item)


def check_credit(value: Any) -> CheckedCredit | FieldError:
    """Check the shape of an internal credit message, which comes from our own agent, and parse it."""
    if not isinstance(value, dict):
        return FieldError(field="(event)", value=None, reason="a credit must be a JSON object")
    for name in ("credit_id", "campaign_id", "event_time", "weights", "revenue"):
        if name not in value:
            return FieldError(field=name, value=None, reason="missing field of a credit")
    if not isinstance(value["credit_id"], str) or not isinstance(value["campaign_id"], str):
        return FieldError(field="credit_id", value=None, reason="credit_id and campaign_id must be strings")
    if value.get("deal_id") is not None:
        # A deal purchase's credit is held by its deal, which needs its buyer and conversion.
        for name in ("deal_id", "person_id", "conversion_id"):
            if not isinstance(value.get(name), str) or not value[name]:
                return FieldError(field=name, value=describe_value(value.get(name)),
                                  reason="a deal purchase's credit needs deal_id, person_id and conversion_id as strings")
    try:
        time_ms = parse_time_ms(value["event_time"])
    except (TypeError, ValueError, AttributeError):
        # describe_value, not str(): str() of a list nested 1,000 deep raises RecursionError.
        return FieldError(field="event_time", value=describe_value(value["event_time"]), reason="not an ISO 8601 time")
    parsed: dict[str, dict[AttributionModel, Decimal]] = {}
    for name in ("weights", "revenue"):
        figures = value[name]
        if not isinstance(figures, dict) or any(model not in ATTRIBUTION_MODELS for model in figures):
            return FieldError(field=name, value=None, reason="must map attribution models to decimal strings")
        numbers = parsed[name] = {}
        for model, text in figures.items():
            figure = _finite_decimal(text)
            if figure is None:
                return FieldError(field=name, value=describe_value(text), reason="not a finite decimal string")
            if name == "weights" and not 0 <= figure <= 1:
                return FieldError(field=name, value=text[:80], reason="a weight must lie between 0 and 1")
            if name == "revenue" and figure and figure.copy_abs().adjusted() >= CREDIT_REVENUE_MAX_INTEGER_DIGITS:
                return FieldError(field=name, value=text[:80],
                                  reason=f"revenue has more than {CREDIT_REVENUE_MAX_INTEGER_DIGITS} integer digits")
            numbers[cast(AttributionModel, model)] = figure  # checked against ATTRIBUTION_MODELS above
    return CheckedCredit(value, time_ms, parsed["weights"], parsed["revenue"])


def _finite_decimal(text: Any) -> Decimal | None:
    """Return the finite decimal that a string spells, else None."""
    if not isinstance(text, str):
        return None
    try:
        figure = Decimal(text)
    except ArithmeticError:
        return None
    return figure if figure.is_finite() else None


def parse_time_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
