"""Checks of the credit messages that the ROI agent reads from the credits topic.

Credits come from roitrack's own attribution agent, but the topic is open to
any producer, so each one is checked before it touches an aggregate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from schemas.common import EARLIEST_EVENT_TIME, ID_PATTERN, LATEST_EVENT_TIME, MAX_ID_LENGTH
from schemas.decode import describe_value
from schemas.outputs import ATTRIBUTION_MODELS, AttributionModel, FieldError

#: Credits carry at most a converted Money amount (15 integer digits) times an exchange rate.
#: Anything larger is a malformed message, and it would overflow the metric rounding.
CREDIT_REVENUE_MAX_INTEGER_DIGITS = 21


def is_credit_batch(value: Any) -> bool:
    """Tell an array of credits (``streams.crediting.pack_credits``) from an array of facts.

    Any credit among the items makes it a credit array, so that a stray item in
    front of valid credits becomes a dead letter of its own instead of taking
    the credits with it.
    """
    return isinstance(value, list) and any(isinstance(item, dict) and item.get("type") == "credit" for item in value)


@dataclass(frozen=True, slots=True)
class CheckedCredit:
    """A credit that passed its checks, with its event time and figures parsed once."""

    value: dict[str, Any]
    time_ms: int
    weights: dict[AttributionModel, Decimal]
    revenue: dict[AttributionModel, Decimal]


def check_credit_item(item: Any, future_limit_ms: int | None = None) -> CheckedCredit | FieldError:
    """Check one item of a credit array, which must be a credit like a single credit message."""
    if isinstance(item, dict) and item.get("type") != "credit":
        return FieldError(field="type", value=describe_value(item.get("type")),
                          reason="an array of credits may contain only credits")
    return check_credit(item, future_limit_ms)


_ID = re.compile(ID_PATTERN)
#: The maximum length of a credit id in the ``CampaignCredit`` schema.
MAX_CREDIT_ID_LENGTH = 3 * MAX_ID_LENGTH + 2
_EARLIEST_MS = int(EARLIEST_EVENT_TIME.timestamp() * 1000)
_LATEST_MS = int(LATEST_EVENT_TIME.timestamp() * 1000)


def check_credit(value: Any, future_limit_ms: int | None = None) -> CheckedCredit | FieldError:
    """Check an internal credit message, which comes from our own agent, and parse it.

    The rules follow the ``CampaignCredit`` output schema. A credit whose event
    time is after ``future_limit_ms`` is rejected, as the attribution agent
    rejects events from too far ahead of its clock.
    """
    if not isinstance(value, dict):
        return FieldError(field="(event)", value=None, reason="a credit must be a JSON object")
    for name in ("credit_id", "campaign_id", "event_time", "weights", "revenue"):
        if name not in value:
            return FieldError(field=name, value=None, reason="missing field of a credit")
    credit_id = value["credit_id"]
    if not isinstance(credit_id, str) or not 0 < len(credit_id) <= MAX_CREDIT_ID_LENGTH:
        return FieldError(field="credit_id", value=describe_value(credit_id),
                          reason=f"must be a string of 1 to {MAX_CREDIT_ID_LENGTH} characters")
    campaign_id = value["campaign_id"]
    if not isinstance(campaign_id, str) or len(campaign_id) > MAX_ID_LENGTH or not _ID.match(campaign_id):
        return FieldError(field="campaign_id", value=describe_value(campaign_id),
                          reason=f"must be an id: 1 to {MAX_ID_LENGTH} characters without whitespace or control characters")
    if value.get("deal_id") is not None:
        # A deal purchase's credit is held by its deal, which needs its buyer and conversion.
        for name in ("deal_id", "person_id", "conversion_id"):
            if not isinstance(value.get(name), str) or not value[name]:
                return FieldError(field=name, value=describe_value(value.get(name)),
                                  reason="a deal purchase's credit needs deal_id, person_id and conversion_id as strings")
    time_ms = _credit_time_ms(value["event_time"], future_limit_ms)
    if isinstance(time_ms, FieldError):
        return time_ms
    weights = _figures(value["weights"], "weights")
    if isinstance(weights, FieldError):
        return weights
    revenue = _figures(value["revenue"], "revenue")
    if isinstance(revenue, FieldError):
        return revenue
    if weights.keys() != revenue.keys():
        return FieldError(field="revenue", value=", ".join(sorted(revenue)),
                          reason=f"must name the same models as weights ({', '.join(sorted(weights))})")
    return CheckedCredit(value, time_ms, weights, revenue)


def _credit_time_ms(text: Any, future_limit_ms: int | None) -> int | FieldError:
    """Return a credit's event time in epoch milliseconds, or the problem with it."""
    try:
        moment = datetime.fromisoformat(text)  # Python 3.11 reads a Z suffix
    except (TypeError, ValueError, AttributeError):
        # describe_value, not str(): str() of a list nested 1,000 deep raises RecursionError.
        return FieldError(field="event_time", value=describe_value(text), reason="not an ISO 8601 time")
    if moment.tzinfo is None:
        return FieldError(field="event_time", value=describe_value(text),
                          reason="has no time zone; write it as UTC with a Z suffix, such as 2026-11-02T10:00:00Z")
    time_ms = int(moment.timestamp() * 1000)
    if not _EARLIEST_MS <= time_ms < _LATEST_MS:
        return FieldError(field="event_time", value=describe_value(text),
                          reason=f"is outside {EARLIEST_EVENT_TIME.date()} to {LATEST_EVENT_TIME.date()} UTC")
    if future_limit_ms is not None and time_ms > future_limit_ms:
        return FieldError(field="event_time", value=describe_value(text),
                          reason=("is more than ROITRACK_MAX_FUTURE_SKEW_S ahead of the worker clock; "
                                  "check the clock of the worker that attributed it"))
    return time_ms


_MODELS = frozenset(ATTRIBUTION_MODELS)
_ZERO = Decimal(0)
_ONE = Decimal(1)


def _figures(figures: Any, name: str) -> dict[AttributionModel, Decimal] | FieldError:
    """Parse a credit's weights (``name`` "weights") or revenue: attribution model -> decimal string.

    A weight lies between 0 and 1; revenue is at least 0 and has at most
    CREDIT_REVENUE_MAX_INTEGER_DIGITS integer digits.
    """
    if not isinstance(figures, dict) or not figures:
        return FieldError(field=name, value=describe_value(figures),
                          reason="must map one or more attribution models to decimal strings")
    is_weight = name == "weights"
    numbers: dict[AttributionModel, Decimal] = {}
    for model, text in figures.items():
        if model not in _MODELS:
            return FieldError(field=name, value=describe_value(model),
                              reason=f"unknown attribution model; expected one of {', '.join(ATTRIBUTION_MODELS)}")
        figure = _finite_decimal(text)
        if figure is None:
            return FieldError(field=name, value=describe_value(text), reason="not a finite decimal string")
        if is_weight:
            if figure < _ZERO or figure > _ONE:
                return FieldError(field=name, value=text[:80], reason="a weight must lie between 0 and 1")
        elif figure < _ZERO:
            return FieldError(field=name, value=text[:80], reason="revenue must not be negative")
        elif figure and figure.adjusted() >= CREDIT_REVENUE_MAX_INTEGER_DIGITS:
            return FieldError(field=name, value=text[:80],
                              reason=f"revenue has more than {CREDIT_REVENUE_MAX_INTEGER_DIGITS} integer digits")
        numbers[cast(AttributionModel, model)] = figure  # checked against ATTRIBUTION_MODELS above
    return numbers


def _finite_decimal(text: Any) -> Decimal | None:
    """Return the finite decimal that a string spells, else None."""
    if not isinstance(text, str):
        return None
    try:
        figure = Decimal(text)
    except ArithmeticError:
        return None
    return figure if figure.is_finite() else None
