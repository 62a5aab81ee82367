"""The report's HTML: one self-contained file with the chart embedded as a base64 PNG.

Every value from Redis goes through ``html.escape``. The page has no script,
and its Content-Security-Policy allows only the embedded image and the inline
style sheet.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from decimal import Decimal
from html import escape

from roitrack.history import Period
from roitrack.i18n import Language, format_decimal, format_percent, model_name, text
from roitrack.report.data import CampaignFigures, ReportData
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL, AttributionModel

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2430; margin: 24px auto; max-width: 1200px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; }
.meta, .note { color: #5b6576; margin: 4px 0; }
.note { font-size: 12px; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d9dee7; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 6px 8px; border-bottom: 1px solid #d9dee7; text-align: left; white-space: nowrap; }
th { color: #5b6576; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
td small { display: block; color: #5b6576; }
"""

#: Table columns: CSS class, catalogue key and whether the column is a number.
COLUMNS = (
    ("campaign", "column.campaign", False),
    ("spend", "column.spend", True),
    ("margin", "column.margin", True),
    ("conversions", "column.conversions", True),
    ("revenue", "column.revenue", True),
    ("roi", "column.roi", True),
    ("roas", "column.roas", True),
    ("cpa", "column.cpa", True),
)


def format_time(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def describe_period(period: Period, language: Language) -> str:
    if period.start_ms is not None and period.end_ms is not None:
        return f"{format_time(period.start_ms)} – {format_time(period.end_ms)}"
    if period.start_ms is not None:
        return text("report.from", language, start=format_time(period.start_ms))
    if period.end_ms is not None:
        return text("report.until", language, end=format_time(period.end_ms))
    return text("report.all_time", language)


def describe_bucket(bucket_s: int, language: Language) -> str:
    """Write a history bucket's length in the language's units: 1 h in English, 1 u in Dutch."""
    if bucket_s % 3600 == 0:
        return f"{bucket_s // 3600} {text('unit.h', language)}"
    return f"{bucket_s // 60} {text('unit.m', language)}"


def _count(value: Decimal, language: Language) -> str:
    """Format conversions: whole ones without decimals, fractional ones (linear, time decay) with two."""
    places = 0 if value == value.to_integral_value() else 2
    return format_decimal(value, places, language)


def _cell(name: str, display: str, value: Decimal | None) -> str:
    raw = "" if value is None else f' data-value="{escape(format(value, "f"))}"'
    return f'<td class="number {name}"{raw}>{escape(display)}</td>'


def campaign_row(figures: CampaignFigures, model: AttributionModel, language: Language) -> str:
    campaign = figures.campaign
    metrics = figures.metrics[model]
    conversions = figures.totals.conversions[model]
    revenue = figures.totals.revenue[model]
    name = escape(campaign.label)
    if campaign.name:
        name += f"<small>{escape(campaign.campaign_id)}</small>"
    cells = [
        f'<td class="campaign">{name}</td>',
        _cell("spend", format_decimal(figures.spend, 2, language), figures.spend),
        _cell("margin", format_percent(campaign.margin, language), campaign.margin),
        _cell("conversions", _count(conversions, language), conversions),
        _cell("revenue", format_decimal(revenue, 2, language), revenue),
        _cell("roi", format_percent(metrics.roi, language), metrics.roi),
        _cell("roas", format_decimal(metrics.roas, 2, language), metrics.roas),
        _cell("cpa", format_decimal(metrics.cpa, 2, language), metrics.cpa),
    ]
    return f'<tr data-campaign="{escape(campaign.campaign_id)}">{"".join(cells)}</tr>'


def model_section(data: ReportData, model: AttributionModel, language: Language) -> str:
    title = escape(model_name(model, language))
    if model == DEFAULT_MODEL:
        title += " " + escape(text("report.default_model", language))
    headings = "".join(
        f'<th class="{"number" if number else "text"}">{escape(text(key, language))}</th>'
        for _, key, number in COLUMNS
    )
    rows = "\n".join(campaign_row(figures, model, language) for figures in data.campaigns)
    return (
        f'<section id="model-{model}">\n<h2>{title}</h2>\n'
        f'<table data-model="{model}">\n<thead><tr>{headings}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n'
        "</section>"
    )


def render_html(data: ReportData, chart_png: bytes | None, language: Language) -> str:
    """Render the whole report. Without ``chart_png`` the chart is left out."""
    title = escape(text("report.title", language))
    period = escape(describe_period(data.period, language))
    generated = text(
        "report.generated", language,
        time=data.generated_at.strftime("%Y-%m-%d %H:%M UTC"), namespace=data.namespace,
    )
    currency = text("report.currency", language, currency=data.currency)
    parts = [
        "<!doctype html>",
        f'<html lang="{language}">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        f"<title>{title}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{title}</h1>",
        f'<p class="meta period">{escape(text("report.period", language))}: {period}</p>',
        f'<p class="meta">{escape(generated)} {escape(currency)}</p>',
    ]

    if not data.campaigns:
        parts.append(f'<p class="empty">{escape(text("report.no_campaigns", language, namespace=data.namespace))}</p>')
    if chart_png is not None:
        encoded = base64.b64encode(chart_png).decode("ascii")
        alt = escape(text("report.chart_alt", language))
        parts.append(f'<figure><img id="chart" src="data:image/png;base64,{encoded}" alt="{alt}"></figure>')

    models = [DEFAULT_MODEL, *(model for model in ATTRIBUTION_MODELS if model != DEFAULT_MODEL)]
    if data.campaigns:
        parts.extend(model_section(data, model, language) for model in models)

    parts.append(f'<p class="note">{escape(text("definitions", language))}</p>')
    if data.period.bounded:
        note = text("report.rounded", language, bucket=describe_bucket(data.bucket_s, language))
    else:
        note = text("report.lifetime_note", language)
    parts.append(f'<p class="note">{escape(note)}</p>')
    if data.period.end_ms is None:
        parts.append(f'<p class="note">{escape(text("report.booked_spend_note", language))}</p>')
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)
