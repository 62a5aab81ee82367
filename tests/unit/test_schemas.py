"""Event and output models in schemas: valid examples, model rules, JSON output and JSON Schema export."""

from __future__ import annotations

import inspect
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter, ValidationError

import schemas
from schemas.common import EARLIEST_EVENT_TIME, LATEST_EVENT_TIME, Envelope, StrictModel, _check_range
from schemas.decode import decode_message, future_time_error, future_time_limit_ms
from schemas.events import (
    EVENT_TYPES,
    Campaign,
    Deal,
    FollowerSnapshot,
    Identify,
    Impressions,
    CheckIn,
    Click,
    CouponRedemption,
    Purchase,
    SocialTouch,
    Spend,
    as_utc,
)
from schemas.privacy import normalise_email, normalise_phone, protect, salted_sha256, truncate_ip
from schemas.export import EXPORTED_MODELS, json_schemas, write_json_schemas
from schemas.outputs import (
    AdvocateReward,
    Alert,
    Attribution,
    CampaignCredit,
    DeadLetter,
    DealActivated,
    DealExpired,
    EngagementFact,
    ReferralFact,
    RoiUpdate,
)

EVENT_TIME = "2024-05-01T12:00:00Z"
EVENT_TIME_MS = 1_714_564_800_000

VALID_EVENTS: dict[str, dict[str, Any]] = {
    "click": {
        "type": "click",
        "event_id": "click-1",
        "event_time": EVENT_TIME,
        "anonymous_id": "anon-1",
        "campaign_id": "spring",
        "channel": "instagram",
        "utm_source": "instagram",
        "utm_medium": "paid_social",
        "utm_campaign": "spring",
        "landing_url": "https://shop.example/spring?utm_source=instagram",
    },
    "touch": {
        "type": "touch",
        "event_id": "touch-1",
        "event_time": EVENT_TIME,
        "user_id": "user-1",
        "campaign_id": "spring",
        "channel": "tiktok",
        "kind": "like",
    },
    "checkin": {
        "type": "checkin",
        "event_id": "checkin-1",
        "event_time": EVENT_TIME,
        "user_id": "user-1",
        "venue_id": "venue-9",
        "campaign_id": "spring",
        "deal_id": "deal-3",
    },
    "identify": {
        "type": "identify",
        "event_id": "identify-1",
        "event_time": EVENT_TIME,
        "user_id": "user-1",
        "anonymous_id": "anon-1",
        "email": "Ann@example.com",
    },
    "coupon_redemption": {
        "type": "coupon_redemption",
        "event_id": "coupon-1",
        "event_time": EVENT_TIME,
        "user_id": "user-1",
        "coupon_code": "SPRING10",
        "order_id": "order-1",
        "discount": "5.00",
        "currency": "EUR",
    },
    "purchase": {
        "type": "purchase",
        "event_id": "purchase-1",
        "event_time": EVENT_TIME,
        "user_id": "user-1",
        "order_id": "order-1",
        "amount": "49.90",
        "currency": "EUR",
        "coupon_code": "SPRING10",
    },
    "campaign": {
        "type": "campaign",
        "campaign_id": "spring",
        "name": "Spring sale",
        "channel": "instagram",
        "start": "2024-04-01T00:00:00Z",
        "end": "2024-06-01T00:00:00Z",
        "margin": "0.35",
        "coupon_codes": ["SPRING10", "SPRING20"],
    },
    "spend": {
        "type": "spend",
        "spend_id": "spend-1",
        "campaign_id": "spring",
        "amount": "250.00",
        "currency": "EUR",
        "period_start": "2024-05-01T00:00:00Z",
        "period_end": "2024-05-02T00:00:00Z",
    },
    "deal": {
        "type": "deal",
        "deal_id": "deal-3",
        "campaign_id": "spring",
        "name": "Spring group buy",
        "price": "19.90",
        "currency": "EUR",
        "threshold": 5,
        "deadline": "2024-05-03T00:00:00Z",
    },
    "impressions": {
        "type": "impressions",
        "impressions_id": "imp-1",
        "campaign_id": "spring",
        "channel": "instagram",
        "count": 12000,
        "period_start": "2024-05-01T00:00:00Z",
        "period_end": "2024-05-01T01:00:00Z",
    },
    "follower_snapshot": {
        "type": "follower_snapshot",
        "snapshot_id": "snap-1",
        "campaign_id": "spring",
        "channel": "instagram",
        "account_id": "shop",
        "followers": 5400,
        "observed_at": EVENT_TIME,
    },
}


def event(event_type: str, **changes: Any) -> dict[str, Any]:
    """Return a copy of the valid example of ``event_type`` with fields changed; None removes a field."""
    data = dict(VALID_EVENTS[event_type])
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


# --- valid examples ------------------------------------------------------


def test_examples_cover_every_event_type() -> None:
    assert set(VALID_EVENTS) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(VALID_EVENTS))
def test_valid_example_decodes_to_model(event_type: str) -> None:
    [decoded] = decode_message(orjson.dumps(VALID_EVENTS[event_type]))

    assert type(decoded) is EVENT_TYPES[event_type]


@pytest.mark.parametrize("event_type", sorted(VALID_EVENTS))
def test_valid_example_json_round_trip(event_type: str) -> None:
    model = EVENT_TYPES[event_type].model_validate(VALID_EVENTS[event_type])

    [decoded] = decode_message(model.model_dump_json().encode())

    assert decoded == model


def test_purchase_fields_parsed() -> None:
    purchase = Purchase.model_validate(VALID_EVENTS["purchase"])

    assert purchase.amount == Decimal("49.90")
    assert purchase.event_time == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert purchase.schema_version == 1
    assert purchase.source == "unknown"


def test_money_integer_accepted() -> None:
    purchase = Purchase.model_validate(event("purchase", amount=50))

    assert purchase.amount == Decimal(50)


def test_money_twelve_places_accepted() -> None:
    purchase = Purchase.model_validate(event("purchase", amount="0.000000000001"))

    assert purchase.amount == Decimal("0.000000000001")


def test_money_serialised_as_string() -> None:
    purchase = Purchase.model_validate(event("purchase", amount="49.90"))

    assert orjson.loads(purchase.model_dump_json())["amount"] == "49.90"


def test_money_exponent_rejected() -> None:
    with pytest.raises(ValidationError, match="plain decimal"):
        Purchase.model_validate(event("purchase", amount="1E+3"))


@pytest.mark.parametrize("body", [
    b"123456789012345678901234567890",  # beyond 64 bits, so orjson reads it as a float
    b"1000000000000000",
    b"1e16",
])
def test_money_too_large_names_limit(body: bytes) -> None:
    raw = b'{"type":"purchase","event_id":"p-big","event_time":"2024-05-01T12:00:00Z","user_id":"u",' \
        b'"order_id":"o","currency":"EUR","amount":' + body + b"}"

    [rejected] = decode_message(raw)

    assert not isinstance(rejected, StrictModel)
    [error] = rejected.errors
    assert error.field == "amount"
    assert "15 integer digits" in error.reason
    assert "999999999999999.999999999999" in error.reason
    assert "JSON float" not in error.reason
    assert error.value is not None
    assert error.value in error.reason


def test_money_largest_integer_accepted() -> None:
    purchase = Purchase.model_validate(event("purchase", amount=10**15 - 1))

    assert purchase.amount == Decimal(10**15 - 1)


@pytest.mark.parametrize("amount", [59.9, 1e-7, 0.5, 123456.75])
def test_money_float_suggestion_is_accepted(amount: float) -> None:
    with pytest.raises(ValidationError) as raised:
        Purchase.model_validate(event("purchase", amount=amount))

    message = raised.value.errors()[0]["msg"]
    assert "not a JSON float" in message
    suggested = re.search(r'such as "([^"]*)"', message)
    assert suggested is not None, message
    purchase = Purchase.model_validate(event("purchase", amount=suggested.group(1)))
    assert purchase.amount == Decimal(repr(amount))


def test_money_negative_float_rejected() -> None:
    with pytest.raises(ValidationError) as raised:
        Purchase.model_validate(event("purchase", amount=-5.5))

    message = raised.value.errors()[0]["msg"]
    assert "must not be negative" in message
    assert "-5.5" in message


def test_money_integer_serialised_plain() -> None:
    purchase = Purchase.model_validate(event("purchase", amount=1000))

    assert orjson.loads(purchase.model_dump_json())["amount"] == "1000"


def test_ratio_serialised_as_string() -> None:
    campaign = Campaign.model_validate(VALID_EVENTS["campaign"])

    assert orjson.loads(campaign.model_dump_json())["margin"] == "0.35"


@pytest.mark.parametrize("kind", ["view", "like", "share", "comment", "follow"])
def test_social_touch_kinds_accepted(kind: str) -> None:
    social = SocialTouch.model_validate(event("touch", kind=kind))

    assert social.kind == kind


def test_social_touch_unknown_kind_rejected() -> None:
    with pytest.raises(ValidationError, match="kind"):
        SocialTouch.model_validate(event("touch", kind="poke"))


def test_checkin_without_campaign_accepted() -> None:
    checkin = CheckIn.model_validate(event("checkin", campaign_id=None, deal_id=None))

    assert checkin.campaign_id is None


def test_click_without_utm_accepted() -> None:
    click = Click.model_validate(
        event("click", utm_source=None, utm_medium=None, utm_campaign=None, landing_url=None)
    )

    assert click.utm_source is None


# --- envelope ------------------------------------------------------------


def test_person_id_prefers_user_id() -> None:
    purchase = Purchase.model_validate(event("purchase", user_id="user-1", anonymous_id="anon-1"))

    assert purchase.person_id == "user-1"


def test_person_id_falls_back_to_anonymous_id() -> None:
    click = Click.model_validate(VALID_EVENTS["click"])

    assert click.person_id == "anon-1"


def test_event_time_ms_utc() -> None:
    purchase = Purchase.model_validate(VALID_EVENTS["purchase"])

    assert purchase.event_time_ms == EVENT_TIME_MS


def test_event_time_ms_offset_normalised() -> None:
    purchase = Purchase.model_validate(event("purchase", event_time="2024-05-01T14:00:00.123+02:00"))

    assert purchase.event_time_ms == EVENT_TIME_MS + 123


def test_schema_version_one_accepted() -> None:
    purchase = Purchase.model_validate(event("purchase", schema_version=1))

    assert purchase.schema_version == 1


def test_schema_version_two_rejected() -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        Purchase.model_validate(event("purchase", schema_version=2))


def test_models_frozen() -> None:
    purchase = Purchase.model_validate(VALID_EVENTS["purchase"])

    with pytest.raises(ValidationError, match="frozen"):
        purchase.amount = Decimal(1)


def test_as_utc_formats_with_z() -> None:
    moment = datetime.fromisoformat("2024-05-01T14:00:00+02:00")

    assert as_utc(moment) == "2024-05-01T12:00:00Z"


# --- model rules ---------------------------------------------------------


def test_coupon_discount_needs_currency() -> None:
    with pytest.raises(ValidationError, match="currency is required"):
        CouponRedemption.model_validate(event("coupon_redemption", currency=None))


def test_coupon_zero_discount_needs_no_currency() -> None:
    coupon = CouponRedemption.model_validate(event("coupon_redemption", discount=None, currency=None))

    assert coupon.discount == 0


def test_campaign_end_before_start_rejected() -> None:
    with pytest.raises(ValidationError, match="is not after start"):
        Campaign.model_validate(event("campaign", end="2024-03-01T00:00:00Z"))


def test_campaign_end_equal_start_rejected() -> None:
    with pytest.raises(ValidationError, match="is not after start"):
        Campaign.model_validate(event("campaign", end="2024-04-01T00:00:00Z"))


def test_campaign_open_end_accepted() -> None:
    campaign = Campaign.model_validate(event("campaign", end=None))

    assert campaign.end is None


@pytest.mark.parametrize("margin", ["0", "1", 0, 1, "0.999"])
def test_campaign_margin_bounds_accepted(margin: object) -> None:
    campaign = Campaign.model_validate(event("campaign", margin=margin))

    assert 0 <= campaign.margin <= 1


@pytest.mark.parametrize("margin", ["1.01", "-0.1", 2])
def test_campaign_margin_outside_rejected(margin: object) -> None:
    with pytest.raises(ValidationError, match="margin"):
        Campaign.model_validate(event("campaign", margin=margin))


def test_campaign_margin_float_rejected() -> None:
    with pytest.raises(ValidationError, match="not a JSON float"):
        Campaign.model_validate(event("campaign", margin=0.35))


def test_spend_period_equal_rejected() -> None:
    with pytest.raises(ValidationError, match="is not after period_start"):
        Spend.model_validate(event("spend", period_end="2024-05-01T00:00:00Z"))


def test_spend_period_naive_rejected() -> None:
    with pytest.raises(ValidationError, match="period_start"):
        Spend.model_validate(event("spend", period_start="2024-05-01T00:00:00"))


# --- output models -------------------------------------------------------


def test_campaign_credit_json_round_trip() -> None:
    credit = CampaignCredit(
        credit_id="purchase-1:spring",
        conversion_id="purchase-1",
        campaign_id="spring",
        event_time=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        weights={"linear": Decimal(1) / Decimal(3), "last_touch": Decimal(1)},
        revenue={"linear": Decimal("16.63"), "last_touch": Decimal("49.90")},
    )

    restored = CampaignCredit.model_validate_json(credit.model_dump_json())

    assert restored == credit


def test_campaign_credit_amounts_serialised_as_strings() -> None:
    credit = CampaignCredit(
        credit_id="purchase-1:spring",
        conversion_id="purchase-1",
        campaign_id="spring",
        event_time=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        weights={"linear": Decimal("0.5")},
        revenue={"linear": Decimal("24.95")},
    )

    dumped = orjson.loads(credit.model_dump_json())

    assert dumped["weights"] == {"linear": "0.5"}
    assert dumped["revenue"] == {"linear": "24.95"}


def test_dead_letter_unknown_reason_rejected() -> None:
    with pytest.raises(ValidationError, match="reason"):
        DeadLetter(
            reason="bogus",  # type: ignore[arg-type]  # an invalid literal is the point
            step="ingest",
            errors=[],
            source_topic="touchpoints",
            source_partition=0,
            source_offset=1,
            event_index=None,
            payload="{}",
            payload_truncated=False,
            rejected_at=datetime(2024, 5, 1, tzinfo=timezone.utc),
        )


# --- JSON Schema export --------------------------------------------------


def test_export_covers_every_event_type() -> None:
    assert set(EVENT_TYPES.values()) <= set(EXPORTED_MODELS)


def test_export_covers_every_output_model() -> None:
    outputs = {
        Attribution, CampaignCredit, RoiUpdate, DeadLetter, EngagementFact, ReferralFact,
        DealActivated, DealExpired, AdvocateReward, Alert,
    }

    assert outputs <= set(EXPORTED_MODELS)


def test_export_covers_every_public_model() -> None:
    public_models = {
        value
        for name in schemas.__all__
        if inspect.isclass(value := getattr(schemas, name)) and issubclass(value, StrictModel)
    }

    assert public_models - {Envelope} == set(EXPORTED_MODELS)


def test_json_schemas_keyed_by_model_name() -> None:
    assert set(json_schemas()) == {model.__name__ for model in EXPORTED_MODELS}


def test_json_schemas_forbid_extra_fields() -> None:
    for name, schema in json_schemas().items():
        assert schema.get("additionalProperties") is False, name


def test_json_schemas_list_type_field() -> None:
    for name, schema in json_schemas().items():
        assert "type" in schema["properties"], name


def test_json_schema_money_string_or_integer() -> None:
    amount = json_schemas()["Purchase"]["properties"]["amount"]

    assert amount["type"] == ["string", "integer"]
    assert amount["pattern"] == r"^[0-9]{1,15}(\.[0-9]{1,12})?$"


def test_json_schema_required_fields() -> None:
    required = set(json_schemas()["Purchase"]["required"])

    assert {"event_id", "event_time", "order_id", "amount", "currency"} <= required


def test_write_json_schemas_one_file_per_model(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)

    assert sorted(path.name for path in written) == sorted(f"{model.__name__}.schema.json" for model in EXPORTED_MODELS)
    assert sorted(tmp_path.iterdir()) == sorted(written)


def test_write_json_schemas_file_contents(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)

    for path in written:
        document = orjson.loads(path.read_bytes())
        name = path.name.removesuffix(".schema.json")
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert document["title"] == name, name
        assert document["properties"] == json_schemas()[name]["properties"], name


def test_write_json_schemas_creates_directory(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "schemas"

    written = write_json_schemas(target)

    assert target.is_dir()
    assert len(written) == len(EXPORTED_MODELS)


def test_write_json_schemas_overwrites(tmp_path: Path) -> None:
    first = write_json_schemas(tmp_path)
    contents = [path.read_bytes() for path in first]

    second = write_json_schemas(tmp_path)

    assert second == first
    assert [path.read_bytes() for path in second] == contents


# --- social events ---------------------------------------------------------


def test_share_referral_code_and_deal_accepted() -> None:
    share = SocialTouch.model_validate(event("touch", kind="share", referral_code="ANN-1", deal_id="deal-3"))

    assert share.referral_code == "ANN-1"
    assert share.deal_id == "deal-3"


@pytest.mark.parametrize("name", ["referral_code", "deal_id"])
def test_referral_fields_only_on_share(name: str) -> None:
    with pytest.raises(ValidationError, match=f"{name} is only allowed on a share"):
        SocialTouch.model_validate(event("touch", kind="like", **{name: "X-1"}))


def test_purchase_deal_and_referral_code_accepted() -> None:
    bought = Purchase.model_validate(event("purchase", deal_id="deal-3", referral_code="ANN-1"))

    assert (bought.deal_id, bought.referral_code) == ("deal-3", "ANN-1")


def test_click_and_signup_take_referral_code() -> None:
    assert Click.model_validate(event("click", referral_code="ANN-1")).referral_code == "ANN-1"
    assert Identify.model_validate(event("identify", referral_code="ANN-1")).referral_code == "ANN-1"


@pytest.mark.parametrize("threshold", [0, -1, 2.0, "3", True])
def test_deal_threshold_must_be_positive_integer(threshold: object) -> None:
    with pytest.raises(ValidationError):
        Deal.model_validate(event("deal", threshold=threshold))


def test_deal_price_float_rejected() -> None:
    with pytest.raises(ValidationError, match="not a JSON float"):
        Deal.model_validate(event("deal", price=19.9))


@pytest.mark.parametrize("count", [-1, 1.5, "10", False])
def test_impressions_count_must_be_whole(count: object) -> None:
    with pytest.raises(ValidationError):
        Impressions.model_validate(event("impressions", count=count))


def test_impressions_period_order_checked() -> None:
    with pytest.raises(ValidationError, match="is not after period_start"):
        Impressions.model_validate(event("impressions", period_end="2024-05-01T00:00:00Z"))


def test_follower_snapshot_without_account_accepted() -> None:
    snapshot = FollowerSnapshot.model_validate(event("follower_snapshot", account_id=None))

    assert snapshot.account_id is None
    assert snapshot.followers == 5400


def test_roi_update_social_fields_optional() -> None:
    schema = RoiUpdate.model_json_schema(mode="validation")

    assert {"engagement", "referrals", "deals"} <= set(schema["properties"])
    assert not {"engagement", "referrals", "deals"} & set(schema["required"])


@given(
    st.datetimes(min_value=datetime(1969, 1, 1), max_value=datetime(3001, 1, 1)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
@example(datetime(2999, 12, 31, 23, 30), -60)  # 3000-01-01T00:30Z: outside
@example(datetime(2999, 12, 31, 12, 0), 14 * 60)  # inside
@example(datetime(1970, 1, 1, 0, 30), 60)  # 1969-12-31T23:30Z: outside
@example(datetime(1971, 1, 1, 0, 0), 14 * 60)  # inside
def test_event_time_range_matches_exact_bounds(local: datetime, offset_minutes: int) -> None:
    # The year shortcut in _check_range must agree with the exact comparison at every offset.
    value = local.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    inside = EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME
    try:
        _check_range(value)
        accepted = True
    except ValueError:
        accepted = False

    assert accepted == inside


_PYDANTIC_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2998, 12, 31)), st.booleans())
@example(datetime(2026, 11, 2, 10, 0, 0, 999_000), True)
@example(datetime(2026, 2, 28, 23, 59, 59), False)
def test_utc_forms_parse_as_pydantic_parses_them(moment: datetime, with_ms: bool) -> None:
    # _require_iso_text parses the two common UTC forms itself; the result must be pydantic's, in timezone.utc.
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond // 1000:03d}" if with_ms else "") + "Z"
    click = Click.model_validate(event("click", event_time=text))

    assert click.event_time == _PYDANTIC_TIME.validate_python(text)
    assert click.event_time.tzinfo is timezone.utc
    assert click.event_time_ms == int(_PYDANTIC_TIME.validate_python(text).timestamp() * 1000)


@pytest.mark.parametrize("text", [
    "2026-13-02T10:00:00Z", "2026-11-31T10:00:00Z", "2026-11-02T25:00:00Z", "2026-11-02T10:00:00.12xZ",
    "2026-11-02T10:00:60Z", "2026-11-02T10:0a:00Z",
    "2026-11-02T10:00:00:500Z",  # Python 3.11's fromisoformat takes the colon; pydantic does not
])
def test_utc_form_typos_get_pydantic_errors(text: str) -> None:
    with pytest.raises(ValidationError) as expected:
        _PYDANTIC_TIME.validate_python(text)
    with pytest.raises(ValidationError) as raised:
        Click.model_validate(event("click", event_time=text))

    errors = [error for error in raised.value.errors() if error["loc"] == ("event_time",)]
    assert [(error["type"], error["msg"]) for error in errors] == [
        (error["type"], error["msg"]) for error in expected.value.errors()
    ]


# --- personal data --------------------------------------------------------


@pytest.mark.parametrize(("address", "truncated"), [
    ("203.0.113.77", "203.0.113.0"),
    ("2001:db8:abcd:12::1", "2001:db8:abcd::"),
    ("::ffff:203.0.113.77", "203.0.113.0"),
    ("::ffff:cb00:714d", "203.0.113.0"),
    # NAT64 and 6to4 carry the IPv4 client's address too; 6to4 truncated as IPv6 would keep all of it.
    ("64:ff9b::203.0.113.77", "203.0.113.0"),
    ("2002:cb00:714d:1::1", "203.0.113.0"),
    ("::1", "::"),
])
def test_truncate_ip(address: str, truncated: str) -> None:
    assert truncate_ip(address) == truncated


def test_protect_unmaps_ipv4_mapped_address() -> None:
    click = Click.model_validate(event("click", ip="::ffff:203.0.113.77"))

    assert protect(click, "salt").ip == "203.0.113.0"


def test_email_with_surrounding_spaces_accepted() -> None:
    identify = Identify.model_validate(event("identify", email=" Alice@Example.COM \t"))

    assert identify.email == "Alice@Example.COM"
    protected = protect(identify, "salt")
    assert protected.email is None
    assert protected.email_sha256 == salted_sha256("alice@example.com", "salt")
    assert protected.email_sha256 == salted_sha256(normalise_email(" Alice@Example.COM "), "salt")


def test_email_inner_space_rejected() -> None:
    with pytest.raises(ValidationError, match="email"):
        Identify.model_validate(event("identify", email="alice @example.com"))


def test_phone_with_surrounding_spaces_accepted() -> None:
    identify = Identify.model_validate(event("identify", phone=" +31 6 1234 5678\n"))

    assert identify.phone == "+31 6 1234 5678"
    assert protect(identify, "salt").phone_sha256 == salted_sha256(normalise_phone("+31612345678"), "salt")


# --- event time ahead of a clock --------------------------------------------


def test_future_time_error_names_limit_and_setting() -> None:
    moment = datetime(2026, 11, 3, 12, tzinfo=timezone.utc)

    error = future_time_error(moment, 300, "collector")

    assert error.field == "event_time"
    assert error.value == moment.isoformat()
    assert "more than 300 s ahead of the collector clock" in error.reason
    assert "ROITRACK_MAX_FUTURE_SKEW_S" in error.reason


def test_future_time_limit_ms_adds_skew() -> None:
    assert future_time_limit_ms(1_000_000, 300) == 1_300_000
