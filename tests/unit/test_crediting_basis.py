"""The basis of an attribution: a deal, a coupon code, a referral code, or the touchpoints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from roitrack.attribution import AttributionParams, StoredTouch
from roitrack.settings import Settings
from streams.crediting import attribute, decode_pending, encode_pending, with_campaigns

SETTINGS = Settings()
PARAMS = AttributionParams(lookback_click_ms=7 * 86_400_000, lookback_view_ms=86_400_000, half_life_ms=7 * 86_400_000)
T0 = 1_793_613_600_000
CLICK = StoredTouch("click-1", "clicked", "click", T0 - 60_000)


def purchase(**fields: Any) -> Any:
    data = {"id": "p-1", "type": "purchase", "person": "bob", "order": "o-1", "amount": "20", "currency": "EUR",
            "coupon": None, "t": T0, **fields}
    return decode_pending(encode_pending(data), 0.0)


def basis_and_credits(pending: Any, coupon_campaign: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    messages = attribute(SETTINGS, PARAMS, pending, [CLICK], coupon_campaign)
    credits = [message.value for message in messages[1:]]
    return messages[0].value["basis"], credits


def test_touchpoints_without_codes() -> None:
    basis, credits = basis_and_credits(purchase())

    assert basis == "touchpoints"
    assert [credit["campaign_id"] for credit in credits] == ["clicked"]


def test_referral_code_credits_shared_campaign() -> None:
    basis, credits = basis_and_credits(purchase(ref="ANN", rc="shared"))

    assert basis == "referral"
    assert [credit["campaign_id"] for credit in credits] == ["shared"]
    assert credits[0]["revenue"]["linear"] == "20"


def test_coupon_beats_referral_code() -> None:
    basis, credits = basis_and_credits(purchase(ref="ANN", rc="shared"), coupon_campaign="couponed")

    assert basis == "coupon"
    assert [credit["campaign_id"] for credit in credits] == ["couponed"]


def test_deal_beats_coupon_and_names_buyer() -> None:
    basis, credits = basis_and_credits(purchase(deal="deal-1", dc="dealt", rc="shared"), coupon_campaign="couponed")

    assert basis == "deal"
    assert len(credits) == 1
    credit = credits[0]
    assert (credit["campaign_id"], credit["deal_id"], credit["person_id"]) == ("dealt", "deal-1", "bob")
    assert Decimal(credit["weights"]["last_touch"]) == 1


def test_plain_credit_has_no_deal_fields() -> None:
    _, credits = basis_and_credits(purchase())

    assert "deal_id" not in credits[0]
    assert "person_id" not in credits[0]


def test_with_campaigns_stores_both() -> None:
    pending = with_campaigns(purchase(deal="deal-1", ref="ANN"), "dealt", "shared")

    assert (pending.deal_campaign, pending.referral_campaign) == ("dealt", "shared")
    assert orjson.loads(pending.member)["dc"] == "dealt"


def test_with_campaigns_unchanged_without_lookups() -> None:
    pending = purchase()

    assert with_campaigns(pending, None, None) is pending
