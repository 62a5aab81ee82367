"""The English and Dutch texts of the screens a marketer reads, and number formatting per language.

``CATALOGUE`` contains every text of the live dashboard and of ``roitrack report``.
The dashboard fetches it as JSON (``/dashboard/catalogue.json``), so the page
itself carries no text of its own. A text may contain ``{name}`` placeholders,
which the caller fills in.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, get_args

from schemas.outputs import ATTRIBUTION_MODELS

Language = Literal["en", "nl"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT_LANGUAGE: Language = "en"

#: Swaps English separators for Dutch ones: 1,234.50 becomes 1.234,50.
_DUTCH_SEPARATORS = str.maketrans(",.", ".,")
#: Locale tags the browser's Intl formatters use for each language.
LOCALES: dict[Language, str] = {"en": "en-GB", "nl": "nl-NL"}

CATALOGUE: dict[Language, dict[str, str]] = {
    "en": {
        "dashboard.title": "roitrack: live ROI",
        "dashboard.heading": "Live ROI per campaign",
        "dashboard.language": "Language",
        "dashboard.model": "Attribution model",
        "dashboard.window": "Window",
        "dashboard.campaigns": "Campaigns",
        "dashboard.no_campaigns": "No campaigns yet. A campaign appears with its first ROI update.",
        "dashboard.chart": "ROI over time",
        "dashboard.chart_empty": "Waiting for ROI updates.",
        "dashboard.chart_note": "Each point is an ROI update this worker received, at the time it was published.",
        "dashboard.alerts": "Alerts",
        "dashboard.no_alerts": "No alerts yet.",
        "dashboard.status.connecting": "Connecting",
        "dashboard.status.live": "Live",
        "dashboard.status.reconnecting": "Connection lost, reconnecting",
        "dashboard.updated": "Updated",
        "alert.state.fired": "Fired",
        "alert.state.resolved": "Resolved",
        "alert.state.unknown": "Unknown state",
        "alert.rule": "Rule",
        "alert.value": "Value",
        "alert.threshold": "Threshold",
        "alert.campaign": "Campaign",
        "window.lifetime": "Lifetime",
        "window.rolling": "Last {count} {unit}",
        "unit.m": "min",
        "unit.h": "h",
        "unit.d": "d",
        "column.campaign": "Campaign",
        "column.spend": "Spend",
        "column.margin": "Margin",
        "column.conversions": "Conversions",
        "column.revenue": "Revenue",
        "column.roi": "ROI",
        "column.roas": "ROAS",
        "column.cpa": "CPA",
        "model.last_touch": "Last touch",
        "model.first_touch": "First touch",
        "model.linear": "Linear",
        "model.time_decay": "Time decay",
        "model.position_based": "Position based",
        "not_available": "n/a",
        "definitions": (
            "ROI = (revenue × margin − spend) / spend. ROAS = revenue / spend. CPA = spend / conversions. "
            "A figure is n/a when its denominator is 0, and ROI also when the campaign has no margin."
        ),
        "report.title": "ROI report",
        "report.period": "Period",
        "report.all_time": "All time",
        "report.from": "from {start}",
        "report.until": "until {end}",
        "report.generated": "Generated at {time} from Redis namespace {namespace}.",
        "report.currency": "Amounts in {currency}.",
        "report.rounded": (
            "The period is rounded outwards to whole history buckets of {bucket}: conversions count in the "
            "bucket of their event time, and spend is spread evenly over the period of each spend record."
        ),
        "report.lifetime_note": (
            "Without --since or --until the table shows the lifetime figures of the ROI aggregates, and the "
            "chart the cumulative ROI from the first bucket with conversions or spend."
        ),
        "report.booked_spend_note": (
            "Spend booked for a later period counts in full in the table and at the chart's last point, "
            "because it is committed. Earlier points count spend only up to their time, so the line can drop "
            "at its last point."
        ),
        "report.chart_alt": "ROI per campaign and attribution model over the period",
        "report.chart_title": "Cumulative ROI, {model}",
        "report.chart_bars": "ROI over the period",
        "report.chart_axis": "ROI (%)",
        "report.no_campaigns": "No campaigns found in Redis namespace {namespace}.",
        "report.model_heading": "{model}",
        "report.default_model": "(default model)",
    },
    "nl": {
        "dashboard.title": "roitrack: live ROI",
        "dashboard.heading": "Live ROI per campagne",
        "dashboard.language": "Taal",
        "dashboard.model": "Attributiemodel",
        "dashboard.window": "Periode",
        "dashboard.campaigns": "Campagnes",
        "dashboard.no_campaigns": "Nog geen campagnes. Een campagne verschijnt bij haar eerste ROI-update.",
        "dashboard.chart": "ROI in de tijd",
        "dashboard.chart_empty": "Wachten op ROI-updates.",
        "dashboard.chart_note": "Elk punt is een ROI-update die deze worker ontving, op het moment van publicatie.",
        "dashboard.alerts": "Meldingen",
        "dashboard.no_alerts": "Nog geen meldingen.",
        "dashboard.status.connecting": "Verbinden",
        "dashboard.status.live": "Live",
        "dashboard.status.reconnecting": "Verbinding verbroken, opnieuw verbinden",
        "dashboard.updated": "Bijgewerkt",
        "alert.state.fired": "Geactiveerd",
        "alert.state.resolved": "Opgelost",
        "alert.state.unknown": "Onbekende status",
        "alert.rule": "Regel",
        "alert.value": "Waarde",
        "alert.threshold": "Drempel",
        "alert.campaign": "Campagne",
        "window.lifetime": "Hele looptijd",
        "window.rolling": "Laatste {count} {unit}",
        "unit.m": "min",
        "unit.h": "u",
        "unit.d": "d",
        "column.campaign": "Campagne",
        "column.spend": "Uitgaven",
        "column.margin": "Marge",
        "column.conversions": "Conversies",
        "column.revenue": "Omzet",
        "column.roi": "ROI",
        "column.roas": "ROAS",
        "column.cpa": "CPA",
        "model.last_touch": "Laatste contactmoment",
        "model.first_touch": "Eerste contactmoment",
        "model.linear": "Lineair",
        "model.time_decay": "Tijdsverval",
        "model.position_based": "Positiegebaseerd",
        "not_available": "n.v.t.",
        "definitions": (
            "ROI = (omzet × marge − uitgaven) / uitgaven. ROAS = omzet / uitgaven. CPA = uitgaven / conversies. "
            "Een cijfer is n.v.t. als de noemer 0 is, en de ROI ook als de campagne geen marge heeft."
        ),
        "report.title": "ROI-rapport",
        "report.period": "Periode",
        "report.all_time": "Hele looptijd",
        "report.from": "vanaf {start}",
        "report.until": "tot {end}",
        "report.generated": "Gemaakt op {time} uit Redis-namespace {namespace}.",
        "report.currency": "Bedragen in {currency}.",
        "report.rounded": (
            "De periode is naar buiten afgerond op hele blokken van {bucket}: conversies tellen in het "
            "blok van hun tijdstip, en uitgaven zijn gelijk verdeeld over de periode van elke uitgavenpost."
        ),
        "report.lifetime_note": (
            "Zonder --since of --until toont de tabel de cijfers over de hele looptijd uit de ROI-aggregaten, "
            "en de grafiek de cumulatieve ROI vanaf het eerste blok met conversies of uitgaven."
        ),
        "report.booked_spend_note": (
            "Uitgaven die voor een latere periode zijn geboekt, tellen volledig mee in de tabel en in het "
            "laatste punt van de grafiek, omdat ze vastliggen. Eerdere punten tellen uitgaven alleen tot hun "
            "tijdstip, dus de lijn kan bij het laatste punt dalen."
        ),
        "report.chart_alt": "ROI per campagne en attributiemodel over de periode",
        "report.chart_title": "Cumulatieve ROI, {model}",
        "report.chart_bars": "ROI over de periode",
        "report.chart_axis": "ROI (%)",
        "report.no_campaigns": "Geen campagnes gevonden in Redis-namespace {namespace}.",
        "report.model_heading": "{model}",
        "report.default_model": "(standaardmodel)",
    },
}


def parse_language(value: str | None) -> Language:
    """Return the language for a ``lang`` value, or raise ValueError naming the choices."""
    if value is None or value == "":
        return DEFAULT_LANGUAGE
    lowered = value.strip().lower()
    for language in LANGUAGES:
        if lowered == language:
            return language
    raise ValueError(f"unknown language {value!r}; choose one of {', '.join(LANGUAGES)}")


def text(key: str, language: Language, **values: object) -> str:
    """Return the text of ``key`` in ``language``, with its placeholders filled in."""
    template = CATALOGUE[language].get(key)
    if template is None:
        template = CATALOGUE[DEFAULT_LANGUAGE][key]
    return template.format(**values) if values else template


def model_name(model: str, language: Language) -> str:
    return text(f"model.{model}", language) if model in ATTRIBUTION_MODELS else model


def format_decimal(value: Decimal | None, places: int, language: Language) -> str:
    """Format a number with thousands separators: 1,234.50 in English, 1.234,50 in Dutch.

    Rounds half away from zero, as the browser's Intl.NumberFormat does. None
    becomes the language's "not available" text.
    """
    if value is None:
        return text("not_available", language)
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # no "-0.00"
    english = f"{rounded:,.{places}f}"
    if language == "nl":
        return english.translate(_DUTCH_SEPARATORS)
    return english


def format_percent(fraction: Decimal | None, language: Language, places: int = 2) -> str:
    """Format a fraction as a percentage: 0.6 becomes 60.00% in English and 60,00% in Dutch."""
    if fraction is None:
        return text("not_available", language)
    return f"{format_decimal(fraction * 100, places, language)}%"
