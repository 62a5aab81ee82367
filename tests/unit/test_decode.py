"""Message decoding in schemas.decode: events, Rejected records and their field errors."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import StrictModel
from schemas.decode import Rejected, decode_message, describe_value, validate_event
from schemas.events import Click, Purchase, Spend
from schemas.outputs import FieldError

VALID_PURCHASE: dict[str, Any] = {
    "type": "purchase",
    "event_id": "purchase-1",
    "event_time": "2024-05-01T12:00:00Z",
    "user_id": "user-1",
    "order_id": "order-1",
    "amount": "49.90",
    "currency": "EUR",
}
VALID_CLICK: dict[str, Any] = {
    "type": "click",
    "event_id": "click-1",
    "event_time": "2024-05-01T11:00:00Z",
    "anonymous_id": "anon-1",
    "campaign_id": "spring",
    "channel": "instagram",
}
VALID_CAMPAIGN: dict[str, Any] = {
    "type": "campaign",
    "campaign_id": "spring",
    "name": "Spring sale",
    "channel": "instagram",
    "start": "2024-04-01T00:00:00Z",
    "margin": "0.35",
}
VALID_SPEND: dict[str, Any] = {
    "type": "spend",
    "spend_id": "spend-1",
    "campaign_id": "spring",
    "amount": "250.00",
    "currency": "EUR",
    "period_start": "2024-05-01T00:00:00Z",
    "period_end": "2024-05-02T00:00:00Z",
}
VALID_EVENTS = (VALID_PURCHASE, VALID_CLICK, VALID_CAMPAIGN, VALID_SPEND)


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Return a copy of ``base`` with fields changed; ``...`` removes a field."""
    data = dict(base)
    for name, value in changes.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def decode_one(payload: object) -> StrictModel | Rejected:
    results = decode_message(orjson.dumps(payload))
    assert len(results) == 1
    return results[0]


def only_error(result: StrictModel | Rejected) -> FieldError:
    assert isinstance(result, Rejected), result
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# --- valid messages ------------------------------------------------------


def test_decode_single_event() -> None:
    result = decode_one(VALID_PURCHASE)

    assert isinstance(result, Purchase)
    assert result.event_id == "purchase-1"


def test_decode_batch_keeps_order() -> None:
    results = decode_message(orjson.dumps([VALID_CLICK, VALID_PURCHASE, VALID_SPEND]))

    assert [type(result) for result in results] == [Click, Purchase, Spend]


# --- invalid fields ------------------------------------------------------

INVALID_CASES = [
    pytest.param(changed(VALID_PURCHASE, amount=12.5), "amount", "12.5", id="float-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="-1.50"), "amount", "-1.50", id="negative-amount-string"),
    pytest.param(changed(VALID_PURCHASE, amount=-2), "amount", "-2", id="negative-amount-integer"),
    pytest.param(changed(VALID_PURCHASE, amount=True), "amount", "True", id="boolean-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="NaN"), "amount", "NaN", id="nan-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="Infinity"), "amount", "Infinity", id="infinity-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="-Infinity"), "amount", "-Infinity", id="minus-infinity-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="inf"), "amount", "inf", id="inf-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="sNaN"), "amount", "sNaN", id="snan-amount"),
    pytest.param(changed(VALID_PURCHASE, amount=""), "amount", "", id="empty-amount"),
    pytest.param(changed(VALID_PURCHASE, amount="ten"), "amount", "ten", id="text-amount"),
    pytest.param(
        changed(VALID_PURCHASE, amount="1.0000000000001"), "amount", "1.0000000000001", id="thirteen-places"
    ),
    pytest.param(
        changed(VALID_PURCHASE, event_time="2024-05-01T12:00:00"),
        "event_time",
        "2024-05-01T12:00:00",
        id="naive-timestamp",
    ),
    pytest.param(changed(VALID_PURCHASE, event_id=...), "event_id", None, id="missing-event-id"),
    pytest.param(changed(VALID_PURCHASE, extra_field="x"), "extra_field", "x", id="extra-field"),
    pytest.param(changed(VALID_PURCHASE, event_id="a" * 129), "event_id", "a" * 80 + "...", id="oversize-id"),
    pytest.param(changed(VALID_PURCHASE, event_id="order 1"), "event_id", "order 1", id="space-in-id"),
    pytest.param(changed(VALID_PURCHASE, event_id="order\t1"), "event_id", "order\t1", id="tab-in-id"),
    pytest.param(changed(VALID_PURCHASE, event_id="order\x001"), "event_id", "order\x001", id="control-in-id"),
    pytest.param(changed(VALID_PURCHASE, event_id=""), "event_id", "", id="empty-id"),
    pytest.param(changed(VALID_PURCHASE, user_id="u" * 129), "user_id", "u" * 80 + "...", id="oversize-user-id"),
    pytest.param(changed(VALID_PURCHASE, currency="eur"), "currency", "eur", id="lowercase-currency"),
    pytest.param(changed(VALID_PURCHASE, currency="EURO"), "currency", "EURO", id="four-letter-currency"),
    pytest.param(changed(VALID_PURCHASE, schema_version=2), "schema_version", "2", id="future-schema-version"),
    pytest.param(changed(VALID_PURCHASE, schema_version="1"), "schema_version", "1", id="string-schema-version"),
    pytest.param(changed(VALID_CAMPAIGN, margin="1.5"), "margin", "1.5", id="margin-above-one"),
    pytest.param(changed(VALID_CAMPAIGN, margin="-0.1"), "margin", "-0.1", id="negative-margin"),
    pytest.param(changed(VALID_CLICK, campaign_id=...), "campaign_id", None, id="missing-campaign-id"),
    pytest.param(changed(VALID_SPEND, amount=100.0), "amount", "100.0", id="float-spend"),
]


@pytest.mark.parametrize(("payload", "field", "value"), INVALID_CASES)
def test_invalid_field_rejected(payload: dict[str, Any], field: str, value: str | None) -> None:
    error = only_error(decode_one(payload))

    assert error.field == field
    assert error.value == value


@pytest.mark.parametrize(("payload", "field", "value"), INVALID_CASES)
def test_invalid_field_reason_invalid(payload: dict[str, Any], field: str, value: str | None) -> None:
    result = decode_one(payload)

    assert isinstance(result, Rejected)
    assert result.reason == "invalid"


@pytest.mark.parametrize("text", ["+Infinity", "-nan", "+NaN", "-sNaN"])
def test_signed_non_finite_amount_value_as_sent(text: str) -> None:
    error = only_error(decode_one(changed(VALID_PURCHASE, amount=text)))

    assert error.value == text


@pytest.mark.parametrize("text", ["+Infinity", "-nan", "+NaN", "-sNaN", "1e400"])
def test_signed_non_finite_amount_rejected(text: str) -> None:
    error = only_error(decode_one(changed(VALID_PURCHASE, amount=text)))

    assert error.field == "amount"


@pytest.mark.parametrize("epoch", [1714564800, 1714564800000, "1714564800"], ids=["seconds", "milliseconds", "seconds-text"])
def test_epoch_event_time_rejected(epoch: int | str) -> None:
    error = only_error(decode_one(changed(VALID_PURCHASE, event_time=epoch)))

    assert error.field == "event_time"


def test_float_amount_reason_explains_fix() -> None:
    error = only_error(decode_one(changed(VALID_PURCHASE, amount=12.5)))

    assert "decimal string" in error.reason


def test_missing_person_rejected_as_event() -> None:
    payload = changed(VALID_PURCHASE, user_id=...)

    error = only_error(decode_one(payload))

    assert error.field == "(event)"
    assert "user_id or anonymous_id is required" in error.reason


def test_missing_person_value_previews_event() -> None:
    payload = changed(VALID_PURCHASE, user_id=...)

    error = only_error(decode_one(payload))

    assert error.value is not None
    assert error.value.startswith('{"type":"purchase"')
    assert error.value.endswith("...")


def test_anonymous_id_alone_accepted() -> None:
    result = decode_one(changed(VALID_PURCHASE, user_id=..., anonymous_id="anon-7"))

    assert isinstance(result, Purchase)
    assert result.person_id == "anon-7"


def test_spend_period_end_before_start_rejected() -> None:
    payload = changed(VALID_SPEND, period_end="2024-04-30T00:00:00Z")

    error = only_error(decode_one(payload))

    assert error.field == "(event)"
    assert "period_end 2024-04-30T00:00:00+00:00 is not after period_start 2024-05-01T00:00:00+00:00" in error.reason


def test_several_errors_all_listed() -> None:
    payload = changed(VALID_PURCHASE, amount=12.5, currency="eur", order_id=...)

    result = decode_one(payload)

    assert isinstance(result, Rejected)
    assert {error.field for error in result.errors} == {"amount", "currency", "order_id"}


def test_rejected_keeps_raw_message() -> None:
    raw = orjson.dumps(changed(VALID_PURCHASE, amount=12.5))

    [result] = decode_message(raw)

    assert isinstance(result, Rejected)
    assert result.raw == raw
    assert result.index is None


# --- unknown types and non-objects ---------------------------------------


def test_unknown_type_rejected() -> None:
    result = decode_one(changed(VALID_PURCHASE, type="refund"))

    assert isinstance(result, Rejected)
    assert result.reason == "unknown_type"
    assert only_error(result).field == "type"
    assert only_error(result).value == "refund"


def test_missing_type_rejected() -> None:
    result = decode_one(changed(VALID_PURCHASE, type=...))

    assert isinstance(result, Rejected)
    assert result.reason == "unknown_type"
    assert only_error(result).value is None


def test_numeric_type_rejected() -> None:
    result = decode_one(changed(VALID_PURCHASE, type=7))

    assert isinstance(result, Rejected)
    assert result.reason == "unknown_type"
    assert only_error(result).value == "7"


@pytest.mark.parametrize("type_value", [["purchase"], {"name": "purchase"}, []])
def test_unhashable_type_rejected(type_value: object) -> None:
    result = decode_one(changed(VALID_PURCHASE, type=type_value))

    assert isinstance(result, Rejected)
    assert result.reason == "unknown_type"
    assert only_error(result).field == "type"


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"42", "42"), (b'"purchase"', "purchase"), (b"true", "True"), (b"null", None), (b"1.5", "1.5")],
)
def test_non_object_json_rejected(raw: bytes, value: str | None) -> None:
    [result] = decode_message(raw)

    error = only_error(result)
    assert isinstance(result, Rejected)
    assert result.reason == "invalid"
    assert error.field == "(event)"
    assert error.value == value


# --- undecodable messages ------------------------------------------------


@pytest.mark.parametrize("raw", [b"not json", b"{", b'{"type": "purchase",}', b"\xff\xfe", b"NaN", b""])
def test_non_json_bytes_undecodable(raw: bytes) -> None:
    [result] = decode_message(raw)

    assert isinstance(result, Rejected)
    assert result.reason == "undecodable"
    assert only_error(result).field == "(message)"
    # The error shows the start of the message, so a dead letter names what arrived.
    assert only_error(result).value == raw.decode("utf-8", "replace")
    assert result.raw == raw


def test_undecodable_value_preview_is_cut() -> None:
    [result] = decode_message(b"x" * 200)

    assert only_error(result).value == "x" * 80 + "..."


def test_none_value_undecodable() -> None:
    [result] = decode_message(None)

    assert isinstance(result, Rejected)
    assert result.reason == "undecodable"
    assert result.raw == b""


# --- batches -------------------------------------------------------------


def test_empty_batch_rejected() -> None:
    [result] = decode_message(b"[]")

    assert isinstance(result, Rejected)
    assert result.reason == "invalid"
    assert only_error(result).field == "(message)"
    assert only_error(result).value == "[]"


def test_batch_one_bad_of_three() -> None:
    bad = changed(VALID_PURCHASE, event_id="purchase-2", amount=9.99)

    results = decode_message(orjson.dumps([VALID_CLICK, bad, VALID_PURCHASE]))

    assert len(results) == 3
    assert isinstance(results[0], Click)
    assert isinstance(results[1], Rejected)
    assert isinstance(results[2], Purchase)


def test_batch_rejection_has_index_and_own_raw() -> None:
    bad = changed(VALID_PURCHASE, event_id="purchase-2", amount=9.99)

    results = decode_message(orjson.dumps([VALID_CLICK, bad, VALID_PURCHASE]))

    rejected = results[1]
    assert isinstance(rejected, Rejected)
    assert rejected.index == 1
    assert orjson.loads(rejected.raw) == bad
    assert only_error(rejected).field == "amount"


def test_batch_non_object_item_rejected() -> None:
    results = decode_message(orjson.dumps([VALID_CLICK, 7]))

    assert isinstance(results[0], Click)
    assert isinstance(results[1], Rejected)
    assert results[1].index == 1
    assert only_error(results[1]).field == "(event)"


def test_nested_batch_item_rejected() -> None:
    [result] = decode_message(orjson.dumps([[VALID_CLICK]]))

    assert isinstance(result, Rejected)
    assert result.index == 0
    assert only_error(result).field == "(event)"


def test_valid_batch_equals_single_decodes() -> None:
    events = [VALID_CLICK, VALID_PURCHASE, VALID_CAMPAIGN, VALID_SPEND, changed(VALID_CLICK, event_id="click-2")]

    results = decode_message(orjson.dumps(events))

    assert results == [decode_one(event) for event in events]


def test_batch_bad_first_event_keeps_later_ones() -> None:
    bad = changed(VALID_CLICK, event_time="1969-12-31T23:59:59Z")

    results = decode_message(orjson.dumps([bad, VALID_CLICK, VALID_PURCHASE]))

    assert only_error(results[0]).field == "event_time"
    assert results[1:] == [decode_one(VALID_CLICK), decode_one(VALID_PURCHASE)]


# --- describe_value ------------------------------------------------------


def test_describe_value_none() -> None:
    assert describe_value(None) is None


def test_describe_value_string_unquoted() -> None:
    assert describe_value("eur") == "eur"


def test_describe_value_object_as_json() -> None:
    assert describe_value({"a": [1, 2]}) == '{"a":[1,2]}'


def test_describe_value_long_text_cut() -> None:
    assert describe_value("x" * 200) == "x" * 80 + "..."


def test_describe_value_exactly_limit_kept() -> None:
    assert describe_value("x" * 80) == "x" * 80


# --- properties ----------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=30,
)
FIELD_NAMES = st.sampled_from(sorted({name for event in VALID_EVENTS for name in event} | {"type", "kind", "extra"}))


def assert_decoded(results: list[StrictModel | Rejected]) -> None:
    assert len(results) >= 1
    for result in results:
        assert isinstance(result, (StrictModel, Rejected)), result


@given(JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_random_json_never_raises(value: object) -> None:
    results = decode_message(json.dumps(value).encode())

    assert_decoded(results)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert_decoded(decode_message(raw))


@given(st.sampled_from(VALID_EVENTS), FIELD_NAMES, JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_mutated_event_never_raises(base: dict[str, Any], field: str, value: object) -> None:
    results = decode_message(json.dumps(changed(base, **{field: value})).encode())

    assert_decoded(results)


@given(st.lists(JSON_VALUES | st.sampled_from(VALID_EVENTS), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_random_batch_one_result_per_item(items: list[object]) -> None:
    results = decode_message(json.dumps(items).encode())

    assert len(results) == len(items)
    for index, result in enumerate(results):
        if isinstance(result, Rejected):
            assert result.index == index


@given(st.lists(JSON_VALUES | st.sampled_from(VALID_EVENTS), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_batch_equals_event_by_event(items: list[object]) -> None:
    # A batch is validated in one call when every event is valid, and event by event otherwise.
    raw = json.dumps(items).encode()
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return  # orjson rejects integers beyond 64 bits, so the whole message is undecodable
    expected = [validate_event(item, index, orjson.dumps(item)) for index, item in enumerate(decoded)]

    assert decode_message(raw) == expected


@pytest.mark.parametrize("code", ["ABC", "EUX", "XXX"])
def test_unknown_currency_rejected(code: str) -> None:
    error = only_error(decode_one(changed(VALID_PURCHASE, currency=code)))

    assert error.field == "currency"
    assert error.value == code
    assert "ISO 4217" in error.reason


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "XCG"])
def test_known_currency_accepted(code: str) -> None:
    result = decode_one(changed(VALID_PURCHASE, currency=code))

    assert isinstance(result, Purchase)
    assert result.currency == code


def test_batch_item_nested_past_repr_limit_rejected() -> None:
    # orjson reads up to 1,024 levels, deeper than repr() can describe.
    depth = 1_020
    raw = b"[" + b"[" * depth + b"]" * depth + b"]"

    items = decode_message(raw)

    assert len(items) == 1
    rejected = items[0]
    assert isinstance(rejected, Rejected)
    assert rejected.errors[0].field == "(event)"
    assert rejected.errors[0].value == "(nested too deeply to show)"
