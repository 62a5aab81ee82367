"""Reading the journeys dataset, replaying it as events, and reading campaigns."""

from __future__ import annotations

import gzip
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

from roitrack.journeys import (
    DEFAULT_JOURNEY_START,
    CampaignFileError,
    JourneyFileError,
    JourneyRow,
    journey_events,
    load_campaigns,
    read_journeys,
)
from roitrack.settings import Settings
from schemas.decode import Rejected, decode_message
from schemas.events import Campaign, Click, Purchase, Spend
from tests.reference_heuristics import read_channelattribution_output

DATA_DIR = REPO_ROOT / "roitrack" / "data"
JOURNEYS_PATH = DATA_DIR / "journeys.csv.gz"
CAMPAIGNS_PATH = DATA_DIR / "campaigns.toml"
RECORDED_PATH = REPO_ROOT / "tests" / "data" / "channelattribution_heuristic.csv"
TOLERANCE = Decimal("1e-6")
CLICK_LOOKBACK_S: int = Settings.model_fields["lookback_click_s"].default
HEADER = "path,total_conversions,total_conversion_value,total_null\n"


@pytest.fixture(scope="module")
def rows() -> list[JourneyRow]:
    return read_journeys(JOURNEYS_PATH)


@pytest.fixture(scope="module")
def events(rows: list[JourneyRow]) -> list[dict[str, Any]]:
    return journey_events(rows, DEFAULT_JOURNEY_START)


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["event_time"])


def _clicks_by_person(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    clicks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["type"] == "click":
            clicks[event["user_id"]].append(event)
    return clicks


# --- read_journeys -------------------------------------------------------------


def test_read_journeys_dataset(rows: list[JourneyRow]) -> None:
    assert len(rows) == 10_000
    assert rows[0] == JourneyRow(path=("eta", "iota", "alpha", "eta"), conversions=1, value=Decimal("0.244"), nulls=3)
    assert sum(row.conversions for row in rows) == 19_785
    assert sum(row.nulls for row in rows) == 68_602
    assert max(len(row.path) for row in rows) == 89


def test_read_journeys_keeps_exact_decimal(rows: list[JourneyRow]) -> None:
    # The CSV writes this value as the float repr 2.4019999999999997.
    assert rows[3].value == Decimal("2.4019999999999997")
    assert str(rows[3].value) == "2.4019999999999997"


def test_read_journeys_plain_csv_matches_gzip(tmp_path: Path, rows: list[JourneyRow]) -> None:
    plain = tmp_path / "journeys.csv"
    plain.write_bytes(gzip.decompress(JOURNEYS_PATH.read_bytes()))

    assert read_journeys(plain) == rows


def test_read_journeys_column_order_free(tmp_path: Path) -> None:
    path = tmp_path / "reordered.csv"
    path.write_text("total_null,path,total_conversion_value,total_conversions\n2,a > b,1.5,1\n")

    assert read_journeys(path) == [JourneyRow(path=("a", "b"), conversions=1, value=Decimal("1.5"), nulls=2)]


@pytest.mark.parametrize(
    ("line", "column", "value"),
    [
        ("a > b,x,1.0,2", "total_conversions", "x"),
        ("a > b,1.5,1.0,2", "total_conversions", "1.5"),
        ("a > b,1,1.0,-1", "total_null", "-1"),
        ("a > b,1,abc,2", "total_conversion_value", "abc"),
        ("a > b,1,-2.5,2", "total_conversion_value", "-2.5"),
        ("a > b,1,NaN,2", "total_conversion_value", "NaN"),
        ("a > b,0,3.5,2", "total_conversion_value", "3.5"),
        ("a >  > b,1,1.0,2", "path", "a >  > b"),
        ("a > b c,1,1.0,2", "path", "a > b c"),
    ],
)
def test_read_journeys_rejects_bad_value(tmp_path: Path, line: str, column: str, value: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "a,1,1.0,0\n" + line + "\n")

    with pytest.raises(JourneyFileError) as caught:
        read_journeys(path)

    message = str(caught.value)
    assert f"{path}:3:" in message
    assert repr(column) in message
    assert repr(value) in message


def test_read_journeys_rejects_field_count(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "a > b,1,1.0\n")

    with pytest.raises(JourneyFileError, match=r"bad\.csv:2: the row has 3 fields but the header has 4"):
        read_journeys(path)


def test_read_journeys_rejects_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("path,total_conversions,total_null\na,1,0\n")

    with pytest.raises(JourneyFileError, match=r"missing the column\(s\) \['total_conversion_value'\]"):
        read_journeys(path)


def test_read_journeys_rejects_other_suffix(tmp_path: Path) -> None:
    path = tmp_path / "journeys.txt"
    path.write_text(HEADER)

    with pytest.raises(JourneyFileError, match=r"expected a \.csv or \.csv\.gz file"):
        read_journeys(path)


def test_read_journeys_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JourneyFileError, match="cannot read the journeys file"):
        read_journeys(tmp_path / "absent.csv.gz")


# --- journey_events on the dataset ---------------------------------------------


def test_events_counts(events: list[dict[str, Any]]) -> None:
    clicks = [event for event in events if event["type"] == "click"]
    purchases = [event for event in events if event["type"] == "purchase"]

    assert len(clicks) == 378_209
    assert len(purchases) == 19_785
    assert len(events) == len(clicks) + len(purchases)
    assert len({event["user_id"] for event in events}) == 88_387


def test_events_total_value(events: list[dict[str, Any]], rows: list[JourneyRow]) -> None:
    total = sum((Decimal(event["amount"]) for event in events if event["type"] == "purchase"), Decimal(0))
    expected = sum((row.value for row in rows), Decimal(0))

    assert abs(total - expected) <= TOLERANCE


def test_events_ids_unique(events: list[dict[str, Any]]) -> None:
    event_ids = [event["event_id"] for event in events]
    order_ids = [event["order_id"] for event in events if event["type"] == "purchase"]

    assert len(set(event_ids)) == len(event_ids)
    assert len(set(order_ids)) == len(order_ids)


def test_events_sorted_by_time_then_id(events: list[dict[str, Any]]) -> None:
    keys = [(_time(event), event["event_id"]) for event in events]

    assert keys == sorted(keys)


def test_events_touches_inside_click_lookback(events: list[dict[str, Any]]) -> None:
    clicks = _clicks_by_person(events)
    lookback = timedelta(seconds=CLICK_LOOKBACK_S)
    purchases = [event for event in events if event["type"] == "purchase"]

    for purchase in purchases:
        purchase_time = _time(purchase)
        touches = clicks[purchase["user_id"]]
        assert touches, f"{purchase['event_id']} has no clicks"
        for click in touches:
            assert _time(click) < purchase_time, f"{click['event_id']} is not before {purchase['event_id']}"
            assert purchase_time - _time(click) <= lookback, f"{click['event_id']} is outside the lookback"


def test_events_first_touches_spread(events: list[dict[str, Any]]) -> None:
    first_touches = [
        _time(event)
        for event in events
        if event["type"] == "click" and event["event_id"] == f"{event['user_id']}-0"
    ]

    assert len(first_touches) == 88_387
    assert min(first_touches) == DEFAULT_JOURNEY_START
    assert max(first_touches) < DEFAULT_JOURNEY_START + timedelta(days=7)
    assert max(first_touches) > DEFAULT_JOURNEY_START + timedelta(days=7) - timedelta(minutes=1)


def test_events_steps_an_hour_apart(events: list[dict[str, Any]], rows: list[JourneyRow]) -> None:
    clicks = _clicks_by_person(events)
    longest_row = max(range(len(rows)), key=lambda index: len(rows[index].path))
    person_clicks = sorted(clicks[f"j{longest_row}-0"], key=lambda event: int(event["event_id"].rsplit("-", 1)[1]))

    assert [click["channel"] for click in person_clicks] == list(rows[longest_row].path)
    assert _time(person_clicks[-1]) - _time(person_clicks[0]) == timedelta(hours=88)


def test_events_deterministic(events: list[dict[str, Any]], rows: list[JourneyRow]) -> None:
    assert journey_events(rows, DEFAULT_JOURNEY_START) == events


def test_events_validate_against_schemas(events: list[dict[str, Any]]) -> None:
    batch_size = 5_000
    counts = {"click": 0, "purchase": 0}

    for first in range(0, len(events), batch_size):
        batch = events[first : first + batch_size]
        decoded = decode_message(orjson.dumps(batch))
        rejected = [item for item in decoded if isinstance(item, Rejected)]
        assert not rejected, f"rejected: {rejected[:3]}"
        for event, model in zip(batch, decoded):
            assert isinstance(model, (Click, Purchase))
            assert model.event_id == event["event_id"]
            counts[model.type] += 1

    assert counts == {"click": 378_209, "purchase": 19_785}


def test_events_keep_channelattribution_touches(events: list[dict[str, Any]]) -> None:
    clicks = _clicks_by_person(events)
    first_touch: dict[str, Decimal] = defaultdict(Decimal)
    last_touch: dict[str, Decimal] = defaultdict(Decimal)
    for event in events:
        if event["type"] != "purchase":
            continue
        touches = sorted(clicks[event["user_id"]], key=_time)
        first_touch[touches[0]["campaign_id"]] += Decimal(event["amount"])
        last_touch[touches[-1]["campaign_id"]] += Decimal(event["amount"])

    recorded = read_channelattribution_output(RECORDED_PATH)
    for channel, credits in recorded.items():
        assert abs(first_touch[channel] - credits["first_touch_value"]) <= TOLERANCE, channel
        assert abs(last_touch[channel] - credits["last_touch_value"]) <= TOLERANCE, channel


# --- journey_events on small inputs --------------------------------------------


def test_events_small_row_layout() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    rows = [JourneyRow(path=("a", "b"), conversions=1, value=Decimal("3"), nulls=1)]

    events = journey_events(rows, start, spread_s=100, step_s=10, purchase_delay_s=5, currency="USD")

    assert [(event["event_id"], event["event_time"]) for event in events] == [
        ("j0-0-0", "2026-01-01T10:00:00Z"),
        ("j0-0-1", "2026-01-01T10:00:10Z"),
        ("p-j0-0", "2026-01-01T10:00:15Z"),
        ("j0-1-0", "2026-01-01T10:00:50Z"),
        ("j0-1-1", "2026-01-01T10:01:00Z"),
    ]
    purchase = events[2]
    assert purchase["order_id"] == "o-j0-0"
    assert purchase["amount"] == "3.000000000000"
    assert purchase["currency"] == "USD"
    assert events[1]["campaign_id"] == "b"
    assert events[1]["utm_source"] == "b"
    assert events[1]["utm_medium"] == "social"
    assert events[1]["source"] == "journeys"


@pytest.mark.parametrize(
    ("value", "conversions", "amount"),
    [
        ("1", 3, "0.333333333333"),
        ("2", 3, "0.666666666667"),
        ("2.0000000000005", 1, "2.000000000000"),
        ("2.0000000000015", 1, "2.000000000002"),
        ("12345678901234567.25", 1, "12345678901234567.250000000000"),
    ],
)
def test_events_amount_rounding(value: str, conversions: int, amount: str) -> None:
    rows = [JourneyRow(path=("a",), conversions=conversions, value=Decimal(value), nulls=0)]

    purchases = [event for event in journey_events(rows) if event["type"] == "purchase"]

    assert [event["amount"] for event in purchases] == [amount] * conversions


def test_events_no_rows() -> None:
    assert journey_events([]) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": datetime(2026, 11, 2)}, "has no time zone"),
        ({"spread_s": -1}, "spread_s is -1"),
        ({"step_s": -5}, "step_s is -5"),
        ({"purchase_delay_s": -1}, "purchase_delay_s is -1"),
        ({"currency": "eur"}, "not an ISO 4217 code"),
    ],
)
def test_events_reject_bad_arguments(arguments: dict[str, Any], message: str) -> None:
    rows = [JourneyRow(path=("a",), conversions=1, value=Decimal("1"), nulls=0)]

    with pytest.raises(ValueError, match=message):
        journey_events(rows, **arguments)


def test_journey_row_rejects_value_without_conversions() -> None:
    with pytest.raises(ValueError, match="0 conversions"):
        JourneyRow(path=("a",), conversions=0, value=Decimal("1"), nulls=3)


@pytest.mark.parametrize("channel", ["", "a b", "x" * 65, "tab\there"])
def test_journey_row_rejects_bad_channel(channel: str) -> None:
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        JourneyRow(path=("a", channel), conversions=1, value=Decimal("1"), nulls=0)


# --- load_campaigns ------------------------------------------------------------


def test_load_campaigns_round_trip(rows: list[JourneyRow]) -> None:
    campaigns, spends = load_campaigns(CAMPAIGNS_PATH)
    dataset_channels = {channel for row in rows for channel in row.path}

    assert len(campaigns) == 12
    assert len(spends) == 12
    for wire in campaigns:
        campaign = Campaign.model_validate(wire)
        assert campaign.model_dump(mode="json") == wire
        assert orjson.loads(orjson.dumps(wire)) == wire
        assert campaign.campaign_id == campaign.channel
        assert Decimal("0.35") <= campaign.margin <= Decimal("0.6")
    for wire in spends:
        spend = Spend.model_validate(wire)
        assert spend.model_dump(mode="json") == wire
        assert orjson.loads(orjson.dumps(wire)) == wire
        assert spend.currency == "EUR"
    assert {campaign["channel"] for campaign in campaigns} == dataset_channels
    assert {spend["campaign_id"] for spend in spends} == dataset_channels


def test_campaigns_cover_replay(events: list[dict[str, Any]]) -> None:
    campaigns, spends = load_campaigns(CAMPAIGNS_PATH)
    first_event = _time(events[0])
    last_event = _time(events[-1])

    for wire in campaigns:
        campaign = Campaign.model_validate(wire)
        assert campaign.start == DEFAULT_JOURNEY_START
        assert campaign.end == DEFAULT_JOURNEY_START + timedelta(days=14)
        assert campaign.start <= first_event
        assert last_event < campaign.end
    for wire in spends:
        spend = Spend.model_validate(wire)
        assert spend.period_start <= first_event
        assert last_event < spend.period_end


def test_campaigns_last_touch_roi_signs() -> None:
    campaigns, spends = load_campaigns(CAMPAIGNS_PATH)
    recorded = read_channelattribution_output(RECORDED_PATH)
    spend_by_campaign = {spend["campaign_id"]: Decimal(spend["amount"]) for spend in spends}

    roi = {}
    for campaign in campaigns:
        revenue = recorded[campaign["channel"]]["last_touch_value"]
        spend = spend_by_campaign[campaign["campaign_id"]]
        roi[campaign["campaign_id"]] = (revenue * Decimal(campaign["margin"]) - spend) / spend

    # The header comment of campaigns.toml names these two groups.
    assert {name for name, value in roi.items() if value > 0} == {"alpha", "iota", "theta", "kappa", "epsilon", "mi"}
    assert {name for name, value in roi.items() if value < 0} == {"eta", "beta", "lambda", "zeta", "gamma", "delta"}


CAMPAIGN_ENTRY = """
[[campaigns]]
campaign_id = "alpha"
name = "Alpha"
channel = "alpha"
margin = "0.5"
start = 2026-11-02T00:00:00Z
end = 2026-11-16T00:00:00Z
"""


def test_load_campaigns_extra_spend_table(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.toml"
    path.write_text(
        'currency = "USD"\n'
        + CAMPAIGN_ENTRY
        + 'spend = 100\n\n[[spend]]\nspend_id = "alpha-extra"\ncampaign_id = "alpha"\namount = "25.50"\n'
        'period_start = "2026-11-03T00:00:00+01:00"\nperiod_end = 2026-11-04T00:00:00Z\n'
    )

    campaigns, spends = load_campaigns(path)

    assert [campaign["campaign_id"] for campaign in campaigns] == ["alpha"]
    assert spends == [
        {
            "type": "spend",
            "schema_version": 1,
            "spend_id": "alpha-spend",
            "campaign_id": "alpha",
            "amount": "100",
            "currency": "USD",
            "period_start": "2026-11-02T00:00:00Z",
            "period_end": "2026-11-16T00:00:00Z",
        },
        {
            "type": "spend",
            "schema_version": 1,
            "spend_id": "alpha-extra",
            "campaign_id": "alpha",
            "amount": "25.50",
            "currency": "USD",
            "period_start": "2026-11-02T23:00:00Z",
            "period_end": "2026-11-04T00:00:00Z",
        },
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY + "spend = 10.5\n", r"spend = 10\.5 is a TOML float"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY.replace("end = 2026-11-16T00:00:00Z", "end = 2026-11-16T00:00:00"), "has no UTC offset"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY + 'budget = "10"\n', r"unknown key\(s\) \['budget'\]"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY + CAMPAIGN_ENTRY, "campaign_id is already used"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY.replace('margin = "0.5"', 'margin = "1.5"'), r"campaigns\[0\] \(alpha\): invalid Campaign: margin"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY.replace("end = 2026-11-16T00:00:00Z\n", "") + 'spend = "5"\n', "spend needs an end"),
        (CAMPAIGN_ENTRY, "missing top-level currency"),
        ('currency = "EUR"\n' + CAMPAIGN_ENTRY + '\n[[spend]]\nspend_id = "s1"\ncampaign_id = "beta"\namount = "1"\n'
         "period_start = 2026-11-02T00:00:00Z\nperiod_end = 2026-11-03T00:00:00Z\n", "'beta' is not defined"),
        ('currency = "EUR"\ncampaigns = 3\n', r"must be an array of tables, written as \[\[campaigns\]\]"),
        ('currency = "EUR"\n[[campaigns]\n', "invalid TOML"),
    ],
)
def test_load_campaigns_rejects_bad_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "campaigns.toml"
    path.write_text(text)

    with pytest.raises(CampaignFileError, match=message):
        load_campaigns(path)
