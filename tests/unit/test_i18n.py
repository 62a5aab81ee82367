"""The English and Dutch catalogue, and number formatting per language."""

from __future__ import annotations

import re
from decimal import Decimal
from importlib import resources

import pytest

from roitrack.i18n import (
    CATALOGUE,
    LANGUAGES,
    format_decimal,
    format_percent,
    model_name,
    parse_language,
    text,
)
from schemas.outputs import ATTRIBUTION_MODELS


def static_text(name: str) -> str:
    return resources.files("streams.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def test_languages_have_the_same_keys() -> None:
    assert set(CATALOGUE["en"]) == set(CATALOGUE["nl"])


def test_languages_have_the_same_placeholders() -> None:
    for key, english in CATALOGUE["en"].items():
        assert set(re.findall(r"\{(\w+)\}", english)) == set(re.findall(r"\{(\w+)\}", CATALOGUE["nl"][key])), key


def test_dashboard_keys_exist() -> None:
    page_keys = set(re.findall(r'data-text="([^"]+)"', static_text("dashboard.html")))
    script_keys = set(re.findall(r'text\("([a-z_.]+)"', static_text("dashboard.js")))
    computed = (
        {f"dashboard.status.{status}" for status in ("connecting", "live", "reconnecting")}
        | {f"alert.state.{state}" for state in ("fired", "resolved", "unknown")}
        | {f"unit.{unit}" for unit in "mhd"}
        | {f"model.{model}" for model in ATTRIBUTION_MODELS}
    )
    # The script builds these from a prefix; the prefixes themselves are no keys.
    script_keys -= {"dashboard.status.", "alert.state.", "unit.", "model."}

    missing = sorted((page_keys | script_keys | computed) - set(CATALOGUE["en"]))

    assert page_keys
    assert script_keys
    assert missing == []


def test_page_has_no_inline_script_or_style() -> None:
    page = static_text("dashboard.html")

    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert " style=" not in page
    assert "<style" not in page
    assert "http://" not in page
    assert "https://" not in page


def test_script_never_parses_html() -> None:
    script = static_text("dashboard.js")

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


@pytest.mark.parametrize(
    ("value", "places", "english", "dutch"),
    [
        ("1234.5", 2, "1,234.50", "1.234,50"),
        ("-0.004", 2, "0.00", "0,00"),
        ("0.005", 2, "0.01", "0,01"),
        ("-2.5", 0, "-3", "-3"),
        ("1234567.891", 1, "1,234,567.9", "1.234.567,9"),
    ],
)
def test_format_decimal(value: str, places: int, english: str, dutch: str) -> None:
    assert format_decimal(Decimal(value), places, "en") == english
    assert format_decimal(Decimal(value), places, "nl") == dutch


def test_format_percent() -> None:
    assert format_percent(Decimal("0.6"), "en") == "60.00%"
    assert format_percent(Decimal("-0.2"), "nl") == "-20,00%"
    assert format_percent(None, "nl") == "n.v.t."
    assert format_decimal(None, 2, "en") == "n/a"


def test_text_fills_placeholders() -> None:
    assert text("window.rolling", "nl", count=24, unit=text("unit.h", "nl")) == "Laatste 24 u"
    assert model_name("linear", "nl") == "Lineair"
    assert model_name("unknown_model", "nl") == "unknown_model"


def test_parse_language() -> None:
    assert parse_language(None) == "en"
    assert parse_language(" NL ") == "nl"
    assert LANGUAGES == ("en", "nl")
    with pytest.raises(ValueError, match="choose one of en, nl"):
        parse_language("de")
