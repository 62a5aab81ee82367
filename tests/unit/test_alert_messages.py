"""The English and Dutch summaries of every rule kind, fired and resolved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from roitrack.alerts.evaluate import Observation
from roitrack.alerts.rules import CpaAboveRule, RoiBelowRule, Rule, SpendWithoutConversionsRule, SuddenDropRule
from roitrack.alerts.messages import summaries
from roitrack.alerts.state import Breach, RuleState, StateKey, Transition

STATE = RuleState(partition=0, campaign_name="Spring", currency="EUR", sequence=9, spend=Decimal("1234.5"))

ROI = RoiBelowRule(id="r", kind="roi_below", window="24h", threshold=Decimal(0))
CPA = CpaAboveRule(id="c", kind="cpa_above", window="7d", model="linear", threshold=Decimal(20))
SPEND = SpendWithoutConversionsRule(id="s", kind="spend_without_conversions", window="lifetime", for_s=3600)
DROP = SuddenDropRule(id="d", kind="sudden_drop", window="1h", metric="revenue", drop_pct=Decimal("40"))

CASES = [
    (ROI, "fired", Observation(True, Decimal("-0.1234"), Decimal(0)),
     "Campaign spring: ROI -0.12 is below 0.00 (24h, last touch).",
     "Campagne spring: ROI -0,12 ligt onder 0,00 (laatste 24 u, laatste contactmoment)."),
    (ROI, "resolved", Observation(False, Decimal("0.05"), Decimal(0)),
     "Campaign spring: ROI 0.05 is back at or above 0.00 (24h, last touch).",
     "Campagne spring: ROI 0,05 ligt weer op of boven 0,00 (laatste 24 u, laatste contactmoment)."),
    (CPA, "fired", Observation(True, Decimal("25.5"), Decimal(20)),
     "Campaign spring: CPA 25.50 EUR is above 20.00 EUR (7d, linear).",
     "Campagne spring: CPA 25,50 EUR ligt boven 20,00 EUR (laatste 7 d, lineair)."),
    (CPA, "resolved", Observation(False, Decimal("19"), Decimal(20)),
     "Campaign spring: CPA 19.00 EUR is back at or below 20.00 EUR (7d, linear).",
     "Campagne spring: CPA 19,00 EUR ligt weer op of onder 20,00 EUR (laatste 7 d, lineair)."),
    (SPEND, "fired", Observation(True, Decimal(3 * 3600 + 5), Decimal(3600)),
     "Campaign spring: 1234.50 EUR spent without conversions for 3 h (lifetime, last touch).",
     "Campagne spring: 1234,50 EUR uitgegeven zonder conversies, al 3 u (hele looptijd, laatste contactmoment)."),
    (SPEND, "resolved", Observation(False, Decimal(90), Decimal(3600)),
     "Campaign spring: no longer spending without conversions, after 90 s (lifetime, last touch).",
     "Campagne spring: geen uitgaven zonder conversies meer, na 90 s (hele looptijd, laatste contactmoment)."),
    (DROP, "fired", Observation(True, Decimal(10), Decimal(60), Decimal(100)),
     "Campaign spring: revenue 10.00 dropped more than 40% below its recent mean 100.00 (1h, last touch).",
     "Campagne spring: omzet 10,00 is meer dan 40% gedaald onder het recente gemiddelde 100,00 (laatste 1 u, laatste contactmoment)."),
    (DROP, "resolved", Observation(False, Decimal(80), Decimal(60), Decimal(100)),
     "Campaign spring: revenue 80.00 is back within 40% of its recent mean 100.00 (1h, last touch).",
     "Campagne spring: omzet 80,00 ligt weer binnen 40% van het recente gemiddelde 100,00 (laatste 1 u, laatste contactmoment)."),
]


@pytest.mark.parametrize(("rule", "state", "observation", "english", "dutch"), CASES,
                         ids=[f"{rule.kind}-{state}" for rule, state, *_ in CASES])
def test_summaries(rule: Rule, state: str, observation: Observation, english: str, dutch: str) -> None:
    transition = Transition(state, Breach(1, 0), observation, 0)

    message_en, message_nl = summaries(rule, StateKey(rule.id, "spring", rule.window), STATE, transition)

    assert message_en == english
    assert message_nl == dutch


@pytest.mark.parametrize(
    ("observed", "english", "dutch"),
    [
        # 27 integer digits: one more than the default decimal context can round to cents.
        (Decimal("1e26"), "100000000000000000000000000.00", "100000000000000000000000000,00"),
        (Decimal("-123456789012345678901234567890.125"), "-123456789012345678901234567890.13",
         "-123456789012345678901234567890,13"),
        (Decimal("1e999999"), "1.00E+999999", "1,00E+999999"),
        (Decimal("-4.567e400"), "-4.57E+400", "-4,57E+400"),
        (Decimal("1e-999999"), "0.00", "0,00"),
    ],
)
def test_summaries_format_any_finite_figure(observed: Decimal, english: str, dutch: str) -> None:
    transition = Transition("resolved", Breach(1, 0), Observation(False, observed, Decimal(0)), 0)

    message_en, message_nl = summaries(ROI, StateKey(ROI.id, "spring", ROI.window), STATE, transition)

    assert message_en == f"Campaign spring: ROI {english} is back at or above 0.00 (24h, last touch)."
    assert message_nl == f"Campagne spring: ROI {dutch} ligt weer op of boven 0,00 (laatste 24 u, laatste contactmoment)."
