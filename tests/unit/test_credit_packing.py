"""Credits packed into one array message per campaign, and the checks of such an array."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from schemas.outputs import FieldError
from streams.credit_check import CheckedCredit, check_credit_item, is_credit_batch
from streams.crediting import MAX_CREDIT_BYTES_PER_MESSAGE, MAX_CREDITS_PER_MESSAGE, pack_credits
from streams.records import Outgoing


def credit(credit_id: str, campaign_id: str) -> Outgoing:
    value: dict[str, Any] = {
        "type": "credit", "credit_id": credit_id, "conversion_id": credit_id, "campaign_id": campaign_id,
        "event_time": "2026-11-02T10:00:00.000Z", "weights": {"last_touch": "1"}, "revenue": {"last_touch": "5"},
    }
    return Outgoing("credits", campaign_id, value)


def test_pack_groups_per_campaign_in_order() -> None:
    attribution = Outgoing("attributions", "ann", {"type": "attribution"})
    messages = [attribution, credit("a1", "spring"), credit("b1", "autumn"), credit("a2", "spring")]

    packed = pack_credits(messages, "credits")

    assert packed[0] is attribution
    assert [(message.key, [item["credit_id"] for item in message.value]) for message in packed[1:]] == [
        ("spring", ["a1", "a2"]), ("autumn", ["b1"]),
    ]
    assert all(message.topic == "credits" for message in packed[1:])


def test_pack_splits_long_arrays() -> None:
    messages = [credit(f"c{index}", "spring") for index in range(MAX_CREDITS_PER_MESSAGE + 1)]

    packed = pack_credits(messages, "credits")

    assert [len(message.value) for message in packed] == [MAX_CREDITS_PER_MESSAGE, 1]
    assert packed[1].value[0]["credit_id"] == f"c{MAX_CREDITS_PER_MESSAGE}"


def test_pack_without_credits_changes_nothing() -> None:
    messages = [Outgoing("attributions", "ann", {"type": "attribution"})]

    assert pack_credits(messages, "credits") == messages


def test_credit_batch_told_from_fact_array() -> None:
    assert is_credit_batch([credit("a1", "spring").value])
    assert not is_credit_batch([{"type": "engagement", "fact_id": "f1"}])
    assert not is_credit_batch([])
    assert not is_credit_batch(credit("a1", "spring").value)


def test_credit_array_item_must_be_a_credit() -> None:
    fact_problem = check_credit_item({"type": "engagement", "fact_id": "f1"})
    scalar_problem = check_credit_item(7)

    assert isinstance(check_credit_item(credit("a1", "spring").value), CheckedCredit)
    assert isinstance(fact_problem, FieldError)
    assert fact_problem.field == "type"
    assert fact_problem.value == "engagement"
    assert isinstance(scalar_problem, FieldError)
    assert scalar_problem.field == "(event)"


def test_checked_credit_carries_parsed_figures() -> None:
    value = credit("a1", "spring").value
    checked = check_credit_item(value)

    assert isinstance(checked, CheckedCredit)
    assert checked.value is value
    assert checked.time_ms == 1_793_613_600_000  # 2026-11-02T10:00:00Z
    assert checked.weights == {model: Decimal(text) for model, text in value["weights"].items()}
    assert checked.revenue == {model: Decimal(text) for model, text in value["revenue"].items()}


def test_pack_closes_message_by_size() -> None:
    """Credits with long multi-byte ids close a message before 500 credits pass the producer's limit."""
    long_id = "\U0001F600" * 300  # 1,200 bytes in each of two id fields
    messages = [credit(f"{long_id}{index}", "spring") for index in range(MAX_CREDITS_PER_MESSAGE)]

    packed = pack_credits(messages, "credits")

    sizes = [len(orjson.dumps(message.value)) for message in packed]
    assert len(packed) > 1
    assert max(sizes) <= MAX_CREDIT_BYTES_PER_MESSAGE
    assert [item["credit_id"] for message in packed for item in message.value] == [
        message.value["credit_id"] for message in messages
    ]


def test_deeply_nested_credit_field_is_a_field_error() -> None:
    """str() of a list nested 1,000 deep raises RecursionError; the check must return a field error instead."""
    nested: Any = []
    for _ in range(1_000):
        nested = [nested]
    for field, value in (("event_time", nested), ("weights", {"last_touch": nested})):
        item = dict(credit("a1", "spring").value, **{field: value})
        problem = check_credit_item(item)
        assert isinstance(problem, FieldError)
        assert problem.field == field


def test_array_with_leading_stray_item_is_credit_array() -> None:
    valid = credit("a1", "spring").value

    assert is_credit_batch([{"type": "oops"}, valid])
    assert is_credit_batch(["junk", valid])


@pytest.mark.parametrize(("changes", "field", "value", "reason_part"), [
    ({"campaign_id": 12345}, "campaign_id", "12345", "must be an id"),
    ({"campaign_id": ""}, "campaign_id", "", "must be an id"),
    ({"credit_id": ""}, "credit_id", "", "must be a string of 1 to 386 characters"),
    ({"campaign_id": "two words"}, "campaign_id", "two words", "must be an id"),
    ({"event_time": "2026-12-05T12:00:00"}, "event_time", "2026-12-05T12:00:00", "no time zone"),
    ({"event_time": "0001-01-01T00:00:00+01:00"}, "event_time", "0001-01-01T00:00:00+01:00", "is outside 1970-01-01"),
    ({"event_time": "2026-11-02T10:05:00.001Z"}, "event_time", "2026-11-02T10:05:00.001Z", "ROITRACK_MAX_FUTURE_SKEW_S"),
    ({"weights": {}}, "weights", "{}", "one or more attribution models"),
    ({"weights": {"bogus_model": "1"}}, "weights", "bogus_model", "unknown attribution model"),
    ({"revenue": {"last_touch": "-1000"}}, "revenue", "-1000", "must not be negative"),
    ({"weights": {"linear": "1"}}, "revenue", "last_touch", "the same models as weights (linear)"),
])
def test_credit_check_names_field_and_value(changes: dict[str, Any], field: str, value: str, reason_part: str) -> None:
    item = dict(credit("a1", "spring").value, **changes)

    problem = check_credit_item(item, future_limit_ms=1_793_613_900_000)  # 2026-11-02T10:05:00Z

    assert isinstance(problem, FieldError)
    assert problem.field == field
    assert problem.value == value
    assert reason_part in problem.reason


def test_far_future_credit_passes_without_limit() -> None:
    item = dict(credit("a1", "spring").value, event_time="2999-01-01T00:00:00Z")

    assert isinstance(check_credit_item(item), CheckedCredit)
    assert isinstance(check_credit_item(item, future_limit_ms=1_793_613_900_000), FieldError)
