"""The report's PNG chart, drawn with matplotlib's Agg backend (no display, no pyplot state).

One panel per attribution model shows each campaign's cumulative ROI over the
period, and a last panel the period's ROI per campaign and model as bars.
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timezone
from decimal import Decimal

from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from roitrack.i18n import Language, format_percent, model_name, text
from roitrack.report.data import ReportData
from schemas.outputs import ATTRIBUTION_MODELS, DEFAULT_MODEL

#: Colours of the campaigns, the same as the dashboard's; a 21st campaign repeats the first colour.
COLOURS = (
    "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df",
    "#bf3989", "#0a7ea4", "#bc4c00", "#57606a", "#4d2d8f",
    "#e0a800", "#6e9f00", "#00a3a3", "#ff7f7f", "#7f5a3a",
    "#e377c2", "#17becf", "#2c3e50", "#b5a300", "#8da8ff",
)
DPI = 100


def _percent(fraction: float, language: Language) -> str:
    """Label an axis tick as a percentage: -0.125 becomes -12.5% in English and -12,5% in Dutch."""
    places = 0 if round(float(fraction) * 100, 6).is_integer() else 1
    return format_percent(Decimal(repr(float(fraction))), language, places=places)


def _label(name: str) -> str:
    """Quote a campaign name for matplotlib: "$" would start math text, and a leading "_" hides a legend entry."""
    quoted = name.replace("$", r"\$")
    return "\u200b" + quoted if quoted.startswith("_") else quoted


def _roi(value: Decimal | None) -> float:
    return math.nan if value is None else float(value)


def render_chart(data: ReportData, language: Language) -> bytes:
    """Draw the chart and return it as PNG bytes."""
    models = [DEFAULT_MODEL, *(model for model in ATTRIBUTION_MODELS if model != DEFAULT_MODEL)]
    figure = Figure(figsize=(12, 12), dpi=DPI, layout="constrained")
    axes = figure.subplots(3, 2).flatten()
    percent_axis = FuncFormatter(lambda value, _position: _percent(value, language))
    # By sorted campaign id, as the dashboard does, so a campaign has the same colour in both.
    campaign_ids = sorted(figures.campaign.campaign_id for figures in data.campaigns)
    colours = {campaign_id: COLOURS[index % len(COLOURS)] for index, campaign_id in enumerate(campaign_ids)}

    for axis, model in zip(axes, models):
        axis.set_title(text("report.chart_title", language, model=model_name(model, language)), fontsize=11)
        for figures in data.campaigns:
            if not figures.series:
                continue
            times = [datetime.fromtimestamp(point.time_ms / 1000, tz=timezone.utc) for point in figures.series]
            values = [_roi(point.metrics[model].roi) for point in figures.series]
            axis.plot(times, values, color=colours[figures.campaign.campaign_id], linewidth=1.6,
                      label=_label(figures.campaign.label))
        axis.axhline(0, color="#8c96a6", linewidth=0.8)
        axis.yaxis.set_major_formatter(percent_axis)
        axis.set_ylabel(text("report.chart_axis", language))
        # matplotlib 3.11 ships these two classes without annotations.
        locator = AutoDateLocator(minticks=3, maxticks=6, tz=timezone.utc)  # type: ignore[no-untyped-call]
        axis.xaxis.set_major_locator(locator)
        axis.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d\n%H:%M", tz=timezone.utc))  # type: ignore[no-untyped-call]
        axis.tick_params(labelsize=8)
        axis.grid(True, color="#e4e8ee", linewidth=0.6)

    bars = axes[len(models)]
    bars.set_title(text("report.chart_bars", language), fontsize=11)
    width = 0.8 / max(1, len(data.campaigns))
    for index, figures in enumerate(data.campaigns):
        offsets = [position + (index - (len(data.campaigns) - 1) / 2) * width for position in range(len(models))]
        values = [_roi(figures.metrics[model].roi) for model in models]
        bars.bar(offsets, values, width=width, color=colours[figures.campaign.campaign_id],
                 label=_label(figures.campaign.label))
    bars.axhline(0, color="#8c96a6", linewidth=0.8)
    bars.set_xticks(range(len(models)), [model_name(model, language) for model in models], fontsize=8, rotation=20)
    bars.yaxis.set_major_formatter(percent_axis)
    bars.set_ylabel(text("report.chart_axis", language))
    bars.grid(True, axis="y", color="#e4e8ee", linewidth=0.6)

    if data.campaigns:
        handles, labels = bars.get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=9)
    output = io.BytesIO()
    figure.savefig(output, format="png", dpi=DPI)
    return output.getvalue()
