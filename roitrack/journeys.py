"""Replay the customer-journey dataset as individual clicks and purchases.

Each row of the dataset aggregates people who followed the same path of channels:
``total_conversions`` of them converted, together worth ``total_conversion_value``,
and ``total_null`` did not convert. :func:`journey_events` expands every row back into
people, so the pipeline receives one Click per path step and one Purchase per
converting person. :func:`load_campaigns` reads the campaigns and spend that give the
channels a cost. Nothing here writes files, and the readers open only the file they
are given.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import IO, Any

from pydantic import ValidationError

from schemas.common import MONEY_MAX_FRACTION_DIGITS
from schemas.events import Campaign, Spend, as_utc

JOURNEY_COLUMNS = ("path", "total_conversions", "total_conversion_value", "total_null")
#: Separator between the channels of a path. Blanks around each channel are stripped.
PATH_SEPARATOR = ">"
#: Maximum length of a channel name, the limit of ``Click.channel``.
MAX_CHANNEL_LENGTH = 64
JOURNEY_SOURCE = "journeys"
JOURNEY_MEDIUM = "social"
DEFAULT_JOURNEY_START = datetime(2026, 11, 2, tzinfo=timezone.utc)
#: Smallest money amount the schemas accept: 1e-12.
AMOUNT_QUANTUM = Decimal(1).scaleb(-MONEY_MAX_FRACTION_DIGITS)

_WHOLE_NUMBER = re.compile(r"[0-9]+")
# Same rule as schemas.common.Id, because a channel name doubles as the campaign id.
_CHANNEL_NAME = re.compile(r"[^\s\x00-\x1f]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
# Enough digits that dividing a dataset value by a conversion count and quantizing
# the result to 1e-12 never runs out of precision.
_DIVISION_PRECISION = 60


class JourneyFileError(ValueError):
    """A journeys CSV file that cannot be read or contains an invalid row."""


class CampaignFileError(ValueError):
    """A campaigns TOML file that cannot be read or contains an invalid entry."""


@dataclass(frozen=True, slots=True)
class JourneyRow:
    """One aggregated journey: a channel path and the people who followed it."""

    path: tuple[str, ...]
    conversions: int
    value: Decimal
    nulls: int

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path is empty, but a journey needs at least one channel")
        for channel in self.path:
            if not _is_channel_name(channel):
                raise ValueError(
                    f"channel {channel!r} must be 1-{MAX_CHANNEL_LENGTH} characters without "
                    "whitespace or control characters"
                )
        if self.conversions < 0 or self.nulls < 0:
            raise ValueError(
                f"conversions ({self.conversions}) and nulls ({self.nulls}) must be >= 0"
            )
        if not self.value.is_finite() or self.value < 0:
            raise ValueError(f"value {self.value} is not a finite amount >= 0")
        if self.conversions == 0 and self.value != 0:
            raise ValueError(
                f"value {self.value} comes with 0 conversions, so no purchase could carry it"
            )

    @property
    def people(self) -> int:
        """Number of people on this path, converting or not."""
        return self.conversions + self.nulls


def _is_channel_name(channel: str) -> bool:
    return len(channel) <= MAX_CHANNEL_LENGTH and _CHANNEL_NAME.fullmatch(channel) is not None


# --- Reading the journeys CSV ---------------------------------------------------


def read_journeys(path: str | os.PathLike[str]) -> list[JourneyRow]:
    """Read a journeys ``.csv`` or ``.csv.gz`` file, keeping values as exact decimals.

    The header must contain the columns in ``JOURNEY_COLUMNS``, in any order. Other
    columns are ignored. Raises JourneyFileError naming the line, column and value of
    the first invalid row.
    """
    name = os.fspath(path)
    try:
        with _open_text(name) as handle:
            return _parse_journeys(name, handle)
    except OSError as exc:  # also gzip.BadGzipFile
        raise JourneyFileError(f"{name}: cannot read the journeys file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise JourneyFileError(f"{name}: the journeys file is not valid UTF-8: {exc}") from exc


@contextmanager
def _open_text(name: str) -> Iterator[IO[str]]:
    if name.endswith(".csv.gz"):
        with gzip.open(name, "rt", encoding="utf-8", newline="") as compressed:
            yield compressed
    elif name.endswith(".csv"):
        with open(name, encoding="utf-8", newline="") as plain:
            yield plain
    else:
        raise JourneyFileError(f"{name}: unsupported file name; expected a .csv or .csv.gz file")


def _parse_journeys(name: str, handle: IO[str]) -> list[JourneyRow]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise JourneyFileError(f"{name}: the file is empty; expected the header {','.join(JOURNEY_COLUMNS)}")
    header = [column.strip() for column in header]
    missing = [column for column in JOURNEY_COLUMNS if column not in header]
    if missing:
        raise JourneyFileError(
            f"{name}:1: header {header} is missing the column(s) {missing}; "
            f"expected {','.join(JOURNEY_COLUMNS)}"
        )
    index = {column: header.index(column) for column in JOURNEY_COLUMNS}

    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue  # csv.reader returns [] for a blank line
        if len(fields) != len(header):
            raise JourneyFileError(
                f"{name}:{line}: the row has {len(fields)} fields but the header has "
                f"{len(header)}. Quote any value that contains a comma."
            )
        rows.append(_parse_row(name, line, {column: fields[i] for column, i in index.items()}))
    return rows


def _parse_row(name: str, line: int, fields: dict[str, str]) -> JourneyRow:
    def invalid_value(column: str, reason: str) -> JourneyFileError:
        return JourneyFileError(
            f"{name}:{line}: column {column!r}: invalid value {fields[column]!r}: {reason}. "
            "Fix or remove that row."
        )

    channels = tuple(part.strip() for part in fields["path"].split(PATH_SEPARATOR))
    for position, channel in enumerate(channels, start=1):
        if not channel:
            raise invalid_value("path", f"channel {position} is empty, so check the ' > ' separators")
        if not _is_channel_name(channel):
            raise invalid_value(
                "path",
                f"channel {channel!r} must be 1-{MAX_CHANNEL_LENGTH} characters without "
                "whitespace or control characters",
            )

    counts = {}
    for column in ("total_conversions", "total_null"):
        text = fields[column].strip()
        if not _WHOLE_NUMBER.fullmatch(text):
            raise invalid_value(column, "expected a whole number >= 0")
        counts[column] = int(text)

    column = "total_conversion_value"
    try:
        value = Decimal(fields[column].strip())
    except InvalidOperation:
        raise invalid_value(column, "expected a decimal number >= 0") from None
    if not value.is_finite() or value < 0:
        raise invalid_value(column, "expected a finite decimal number >= 0")
    if counts["total_conversions"] == 0 and value != 0:
        raise invalid_value(column, "total_conversions is 0, so the value cannot belong to a purchase")

    return JourneyRow(
        path=channels,
        conversions=counts["total_conversions"],
        value=value,
        nulls=counts["total_null"],
    )


# --- Expanding rows into events -------------------------------------------------


def journey_events(
    rows: Sequence[JourneyRow],
    start: datetime = DEFAULT_JOURNEY_START,
    spread_s: int = 7 * 86400,
    step_s: int = 3600,
    purchase_delay_s: int = 60,
    currency: str = "EUR",
) -> list[dict[str, Any]]:
    """Expand journey rows into Click and Purchase wire dicts, sorted by event time.

    Row ``r`` becomes ``conversions`` converting people followed by ``nulls``
    non-converting people, with user ids ``j{r}-{k}``. People are numbered across all
    rows, and person ``p`` of ``P`` makes the first touch ``floor(p * spread_s / P)``
    seconds after ``start``. That person clicks each channel of the path in turn,
    ``step_s`` apart, with event ids ``j{r}-{k}-{step}``. A converting person buys
    ``purchase_delay_s`` after the last click (order ``o-j{r}-{k}``, event
    ``p-j{r}-{k}``). Each purchase is worth ``value / conversions`` rounded half-even
    to 1e-12, so a row's purchases add up to its value within
    ``conversions * 0.5e-12``.

    Times are UTC strings ending in ``Z`` and amounts are decimal strings, so every dict
    is ready for JSON and validates as ``schemas.events.Click`` or ``Purchase``. Ties
    in event time are ordered by event id. The output depends only on the arguments.
    """
    _check_replay_arguments(start, spread_s, step_s, purchase_delay_s, currency)
    total_people = sum(row.people for row in rows)
    base = start.astimezone(timezone.utc)
    time_texts: dict[int, str] = {}

    def time_text(offset_s: int) -> str:
        text = time_texts.get(offset_s)
        if text is None:
            text = as_utc(base + timedelta(seconds=offset_s))
            time_texts[offset_s] = text
        return text

    keyed: list[tuple[int, str, dict[str, Any]]] = []
    person_index = 0
    for row_index, row in enumerate(rows):
        amount = _purchase_amount(row)
        for person in range(row.people):
            user_id = f"j{row_index}-{person}"
            first_touch_s = person_index * spread_s // total_people
            person_index += 1

            for step, channel in enumerate(row.path):
                click_s = first_touch_s + step * step_s
                event_id = f"{user_id}-{step}"
                click = {
                    "type": "click",
                    "schema_version": 1,
                    "event_id": event_id,
                    "event_time": time_text(click_s),
                    "user_id": user_id,
                    "source": JOURNEY_SOURCE,
                    "campaign_id": channel,
                    "channel": channel,
                    "utm_source": channel,
                    "utm_medium": JOURNEY_MEDIUM,
                }
                keyed.append((click_s, event_id, click))

            if person < row.conversions:
                purchase_s = first_touch_s + (len(row.path) - 1) * step_s + purchase_delay_s
                event_id = f"p-{user_id}"
                purchase = {
                    "type": "purchase",
                    "schema_version": 1,
                    "event_id": event_id,
                    "event_time": time_text(purchase_s),
                    "user_id": user_id,
                    "source": JOURNEY_SOURCE,
                    "order_id": f"o-{user_id}",
                    "amount": amount,
                    "currency": currency,
                }
                keyed.append((purchase_s, event_id, purchase))

    keyed.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in keyed]


def _check_replay_arguments(
    start: datetime, spread_s: int, step_s: int, purchase_delay_s: int, currency: str
) -> None:
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start {start.isoformat()} has no time zone; pass an aware datetime")
    for name, seconds in (("spread_s", spread_s), ("step_s", step_s), ("purchase_delay_s", purchase_delay_s)):
        if seconds < 0:
            raise ValueError(f"{name} is {seconds}; it must be >= 0 seconds")
    if not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code such as 'EUR'")


def _purchase_amount(row: JourneyRow) -> str:
    """Return one converting person's share of the row's value, as a decimal string."""
    if row.conversions == 0:
        return "0"
    with localcontext() as context:
        context.prec = _DIVISION_PRECISION
        share = (row.value / row.conversions).quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_EVEN)
    return format(share, "f")


# --- Reading campaigns and spend ------------------------------------------------

_CAMPAIGN_KEYS = frozenset({"campaign_id", "name", "channel", "margin", "start", "end", "spend", "coupon_codes"})
_SPEND_KEYS = frozenset({"spend_id", "campaign_id", "amount", "currency", "period_start", "period_end"})


def load_campaigns(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a campaigns TOML file into Campaign and Spend wire dicts.

    The file has a top-level ``currency`` and a ``[[campaigns]]`` table per campaign.
    A campaign's optional ``spend`` amount is spent evenly from its ``start`` to its
    ``end``, under the spend id ``{campaign_id}-spend``. Further ``[[spend]]`` tables
    add spend over any period. Amounts and margins are decimal strings, and times are
    TOML offset date-times or ISO 8601 strings with a time zone. Every entry is
    validated against the schemas. Raises CampaignFileError naming the entry and the
    field of the first problem.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise CampaignFileError(f"{name}: cannot read the campaigns file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CampaignFileError(f"{name}: invalid TOML: {exc}") from exc

    unknown = sorted(set(document) - {"currency", "campaigns", "spend"})
    if unknown:
        raise CampaignFileError(f"{name}: unknown top-level key(s) {unknown}; expected currency, campaigns, spend")
    currency = document.get("currency")
    if not isinstance(currency, str):
        raise CampaignFileError(f"{name}: missing top-level currency; add a line such as currency = \"EUR\"")

    campaigns: list[dict[str, Any]] = []
    spends: list[dict[str, Any]] = []
    for position, entry in enumerate(_tables(name, document, "campaigns")):
        where = f"{name}: campaigns[{position}] ({entry.get('campaign_id', 'no campaign_id')})"
        campaign, spend = _campaign_entry(where, entry, currency)
        if any(known["campaign_id"] == campaign["campaign_id"] for known in campaigns):
            raise CampaignFileError(f"{where}: campaign_id is already used by an earlier campaign")
        campaigns.append(campaign)
        if spend is not None:
            spends.append(spend)

    campaign_ids = {campaign["campaign_id"] for campaign in campaigns}
    for position, entry in enumerate(_tables(name, document, "spend")):
        where = f"{name}: spend[{position}] ({entry.get('spend_id', 'no spend_id')})"
        spends.append(_spend_entry(where, entry, currency, campaign_ids))

    spend_ids = [spend["spend_id"] for spend in spends]
    duplicates = sorted({spend_id for spend_id in spend_ids if spend_ids.count(spend_id) > 1})
    if duplicates:
        raise CampaignFileError(f"{name}: spend id(s) {duplicates} are used more than once; give each spend its own id")
    return campaigns, spends


def _tables(name: str, document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    tables = document.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise CampaignFileError(f"{name}: {key} must be an array of tables, written as [[{key}]]")
    return tables


def _campaign_entry(
    where: str, entry: dict[str, Any], currency: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    unknown = sorted(set(entry) - _CAMPAIGN_KEYS)
    if unknown:
        raise CampaignFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_CAMPAIGN_KEYS)}")
    fields = {key: _wire_value(where, key, value) for key, value in entry.items() if key != "spend"}
    campaign = _validated(where, Campaign, {"type": "campaign", **fields})

    if "spend" not in entry:
        return campaign, None
    if campaign["end"] is None:
        raise CampaignFileError(f"{where}: spend needs an end; add end, or move the spend to a [[spend]] table")
    spend_fields = {
        "type": "spend",
        "spend_id": f"{campaign['campaign_id']}-spend",
        "campaign_id": campaign["campaign_id"],
        "amount": _wire_value(where, "spend", entry["spend"]),
        "currency": currency,
        "period_start": campaign["start"],
        "period_end": campaign["end"],
    }
    return campaign, _validated(where, Spend, spend_fields)


def _spend_entry(where: str, entry: dict[str, Any], currency: str, campaign_ids: set[str]) -> dict[str, Any]:
    unknown = sorted(set(entry) - _SPEND_KEYS)
    if unknown:
        raise CampaignFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SPEND_KEYS)}")
    fields = {key: _wire_value(where, key, value) for key, value in entry.items()}
    spend = _validated(where, Spend, {"type": "spend", "currency": currency, **fields})
    if spend["campaign_id"] not in campaign_ids:
        raise CampaignFileError(
            f"{where}: campaign_id {spend['campaign_id']!r} is not defined in [[campaigns]]"
        )
    return spend


def _wire_value(where: str, key: str, value: Any) -> Any:
    """Convert a TOML value to its JSON wire form, rejecting floats and naive times."""
    if isinstance(value, float):
        raise CampaignFileError(
            f"{where}: {key} = {value!r} is a TOML float, which can round money; "
            f"write it as a string, {key} = \"{value!r}\""
        )
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CampaignFileError(
                f"{where}: {key} = {value.isoformat()} has no UTC offset; write it like 2026-11-02T00:00:00Z"
            )
        return as_utc(value)
    if isinstance(value, int) and not isinstance(value, bool) and key in {"spend", "amount"}:
        return str(value)
    return value


def _validated(where: str, model: type[Campaign] | type[Spend], fields: dict[str, Any]) -> dict[str, Any]:
    try:
        instance = model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(entry)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise CampaignFileError(f"{where}: invalid {model.__name__}: {problems}") from None

    wire: dict[str, Any] = instance.model_dump(mode="json")
    # The JSON dump keeps the offset of a time written as a string, so convert every time to UTC.
    for field, value in instance:
        if isinstance(value, datetime):
            wire[field] = as_utc(value)
    return wire
