"""Alerts as the dashboard shows them: only known fields, each of a known type and length.

Another component produces the alerts, so the dashboard takes nothing on
trust. It keeps the fields it displays, turns numbers into decimal strings and
cuts long texts. The browser still inserts every value as text.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

ALERT_STATES = frozenset({"fired", "resolved"})
#: Maximum characters kept per text field. The messages get more room than the ids.
MAX_ID_CHARS = 128
MAX_MESSAGE_CHARS = 500
#: The fields of an ``Alert`` record (schemas.outputs) that the dashboard shows.
_TEXT_FIELDS = {"rule_id": MAX_ID_CHARS, "campaign_id": MAX_ID_CHARS, "window": 32, "model": 32, "metric": 32,
                "message_en": MAX_MESSAGE_CHARS, "message_nl": MAX_MESSAGE_CHARS}
_NUMBER_FIELDS = ("observed", "threshold")
#: A number's text is read only up to this length, and its magnitude must lie within
#: 10^-40 to 10^40: formatting 1e999999999 in full would take gigabytes.
_NUMBER_MAX_CHARS = 64
_NUMBER_MAX_EXPONENT = 40


def _text(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:limit]


def _number(value: Any) -> str | None:
    """Return a finite number of a sane size, given as a JSON number or a decimal string, as a decimal string, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    text = str(value).strip()
    if len(text) > _NUMBER_MAX_CHARS:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite() or (number and abs(number.adjusted()) > _NUMBER_MAX_EXPONENT):
        return None
    return format(number, "f")[:_NUMBER_MAX_CHARS]


def clean_alert(value: Any, received_ms: int) -> dict[str, Any] | None:
    """Return the displayable fields of an alert message, or None when it is not a JSON object.

    A field of the wrong type or size becomes None (a state: "unknown"), so
    that one bad message shows what it can and never stops the feed.
    """
    if not isinstance(value, dict):
        return None
    alert: dict[str, Any] = {name: _text(value.get(name), limit) for name, limit in _TEXT_FIELDS.items()}
    for name in _NUMBER_FIELDS:
        alert[name] = _number(value.get(name))
    state = value.get("state")
    alert["state"] = state if isinstance(state, str) and state in ALERT_STATES else "unknown"
    alert["received_ms"] = received_ms
    return alert
