"""Alerts as the dashboard shows them: only known fields, each of a known type and length.

Another component produces the alerts, so the dashboard takes nothing on
trust. It keeps the fields it displays, turns numbers into decimal strings and
cuts long texts. The browser still inserts every value as text.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

ALERT_STATES = frozenset({"fired", "resolved"})
#: Maximum characters kept per text field. The message gets more room than the ids.
MAX_ID_CHARS = 128
MAX_MESSAGE_CHARS = 500
_TEXT_FIELDS = {"rule_id": MAX_ID_CHARS, "campaign_id": MAX_ID_CHARS, "window": 32, "model": 32,
                "message": MAX_MESSAGE_CHARS}
_NUMBER_FIELDS = ("value", "threshold")


def _text(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:limit]


def _number(value: Any) -> str | None:
    """Return a finite number, given as a JSON number or a decimal string, as a decimal string, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return format(number, "f")[:64]


def clean_alert(value: Any, received_ms: int) -> dict[str, Any] | None:
    """Return the displayable fields of an alert message, or None when it is not a JSON object."""
    if not isinstance(value, dict):
        return None
    alert: dict[str, Any] = {name: _text(value.get(name), limit) for name, limit in _TEXT_FIELDS.items()}
    for name in _NUMBER_FIELDS:
        alert[name] = _number(value.get(name))
    state = value.get("state")
    alert["state"] = state if state in ALERT_STATES else "unknown"
    alert["received_ms"] = received_ms
    return alert
