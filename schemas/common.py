"""Field types and the envelope that every input event shares."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any

from schemas.currencies import check_currency
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

SCHEMA_VERSION = 1

#: Maximum length of an identifier (event, person, campaign and order ids).
MAX_ID_LENGTH = 128
#: Fractional digits accepted in a money amount. Twelve keeps shares of split
#: conversions exact to far below a cent while rejecting garbage precision.
MONEY_MAX_FRACTION_DIGITS = 12
#: Integer digits accepted in a money amount: up to 999 trillion.
MONEY_MAX_INTEGER_DIGITS = 15
#: Event times outside this range are rejected: they are clock or encoding errors.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_EVENT_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)


#: The largest money amount, as text for error messages.
MONEY_MAX_TEXT = "9" * MONEY_MAX_INTEGER_DIGITS + "." + "9" * MONEY_MAX_FRACTION_DIGITS


def _reject_float(value: Any) -> Any:
    """Accept a decimal string or an integer; reject binary floats and booleans."""
    if isinstance(value, bool):
        raise ValueError("must be a decimal string or an integer, not a boolean")
    if isinstance(value, float):
        if value < 0:
            raise ValueError(f"must not be negative; got {value!r}")
        # format(..., "f") writes the float's shortest repr without an exponent
        # (1e-07 -> 0.0000001), so the suggestion passes the plain-decimal check.
        suggestion = format(Decimal(repr(value)), "f")
        raise ValueError(
            f"must be a decimal string such as \"{suggestion}\", not a JSON float, "
            "so that it is not rounded"
        )
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.match(value):
            raise ValueError(
                f"must be a plain decimal such as \"12.50\": digits, an optional point and "
                f"fraction, no sign, exponent, separators or spaces; got {value!r}"
            )
        return Decimal(value)
    return value


def _check_money_size(value: Any) -> Any:
    """Reject a number with more than ``MONEY_MAX_INTEGER_DIGITS`` integer digits, then apply ``_reject_float``.

    The size check comes first because orjson reads a JSON integer beyond 64
    bits as a float, and the float message would then mislead.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 10**MONEY_MAX_INTEGER_DIGITS:
        raise ValueError(
            f"has more than {MONEY_MAX_INTEGER_DIGITS} integer digits; the largest amount is "
            f"{MONEY_MAX_TEXT}, got {value!r}"
        )
    return _reject_float(value)


_PLAIN_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")


_NUMERIC_TEXT = re.compile(r"^[+-]?\d+(\.\d*)?$")
#: Lengths of YYYY-MM-DDTHH:MM:SSZ and YYYY-MM-DDTHH:MM:SS.fffZ.
_UTC_FORM_LENGTHS = (20, 24)


def _require_iso_text(value: Any) -> Any:
    """Accept an ISO 8601 string or a datetime; reject numbers read as Unix time.

    The two UTC forms that trackers send, ``2026-11-02T10:00:00Z`` and
    ``2026-11-02T10:00:00.123Z``, are parsed here by ``datetime.fromisoformat``.
    Its ``timezone.utc`` makes ``timestamp()`` less than half as costly as on
    pydantic's own UTC object, and both are called for every event. Any other
    text, and text that this parse refuses, goes on to pydantic's parser and
    its error messages.
    """
    if isinstance(value, datetime):
        return value
    if (
        isinstance(value, str)
        and len(value) in _UTC_FORM_LENGTHS
        and value[-1] == "Z"
        and value[10] == "T"
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
        # Python 3.11's fromisoformat also takes a colon before the fraction; pydantic does not.
        and (len(value) == 20 or value[19] == ".")
    ):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, str) or _NUMERIC_TEXT.match(value.strip()):
        raise ValueError(
            "must be an ISO 8601 date-time string with a timezone, such as "
            "2026-11-02T10:00:00Z, not a number"
        )
    return value


# Years whose every moment is inside the range at any UTC offset (offsets stay
# under a day). Reading ``year`` costs a tenth of an aware comparison, which calls
# ``utcoffset`` on both sides, and this check runs for every event.
_SAFE_FIRST_YEAR = EARLIEST_EVENT_TIME.year + 1
_SAFE_LAST_YEAR = LATEST_EVENT_TIME.year - 2


def _check_range(value: datetime) -> datetime:
    if _SAFE_FIRST_YEAR <= value.year <= _SAFE_LAST_YEAR:
        return value
    if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
        raise ValueError(
            f"is outside {EARLIEST_EVENT_TIME.date()} to {LATEST_EVENT_TIME.date()} UTC; check the sender's clock"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_iso_text), AfterValidator(_check_range)]
"""A timezone-aware ISO 8601 date-time string."""


#: The characters of an id: no whitespace, control characters (C0, DEL, C1) or
#: invisible format characters (zero-width, bidirectional overrides, BOM).
ID_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]+$"

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, strip_whitespace=False, pattern=ID_PATTERN),
]
"""An identifier: 1-128 printable characters without whitespace."""

ShortText = Annotated[str, StringConstraints(max_length=512)]
LongText = Annotated[str, StringConstraints(max_length=2048)]

Money = Annotated[
    Decimal,
    BeforeValidator(_check_money_size),
    Field(
        ge=0,
        allow_inf_nan=False,
        decimal_places=MONEY_MAX_FRACTION_DIGITS,
        max_digits=MONEY_MAX_INTEGER_DIGITS + MONEY_MAX_FRACTION_DIGITS,
    ),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": ["string", "integer"], "pattern": r"^[0-9]{1,15}(\.[0-9]{1,12})?$"}, mode="validation"
    ),
]
"""A non-negative amount: a decimal string or an integer, never a float."""

Ratio = Annotated[
    Decimal,
    BeforeValidator(_reject_float),
    Field(ge=0, le=1, allow_inf_nan=False),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
]
"""A number from 0 to 1, as a decimal string or an integer."""

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(check_currency)]
"""An ISO 4217 alphabetic code, such as EUR."""


class StrictModel(BaseModel):
    """Base of every schema: unknown fields and silent coercions are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"is not an IPv4 or IPv6 address: {value!r}") from None


IpAddress = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_ip)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# Surrounding whitespace is stripped before the length and pattern checks, so a
# padded address or number is accepted, and schemas.privacy.protect hashes the trimmed value.
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=32, pattern=r"^\+?[0-9 ()./-]{4,31}$")]


class Envelope(StrictModel):
    """Fields every input event carries.

    ``email``, ``phone`` and ``ip`` are personal data: ``schemas.privacy.protect``
    replaces them at the edge (hashes, truncated address) before anything is stored.
    """

    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION, strict=True)
    event_id: Id
    event_time: Timestamp
    user_id: Id | None = None
    anonymous_id: Id | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "unknown"
    consent: bool | None = Field(None, strict=True, description="false: the person refused tracking; the event is dropped")
    ip: IpAddress | None = None
    user_agent: Annotated[str, StringConstraints(max_length=512)] | None = None
    email: Email | None = None
    phone: Phone | None = None
    email_sha256: Sha256Hex | None = None
    phone_sha256: Sha256Hex | None = None

    @model_validator(mode="after")
    def _require_person(self) -> "Envelope":
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("user_id or anonymous_id is required; both are missing")
        return self

    @property
    def person_id(self) -> str:
        """The partition key: the user id when known, else the anonymous id."""
        return self.user_id if self.user_id is not None else self.anonymous_id  # type: ignore[return-value]  # the validator guarantees one is set

    @property
    def event_time_ms(self) -> int:
        return int(self.event_time.timestamp() * 1000)


def epoch_ms(moment: datetime) -> int:
    """Convert an aware datetime to integer epoch milliseconds."""
    return int(moment.timestamp() * 1000)
