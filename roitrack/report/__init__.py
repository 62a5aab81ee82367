"""`roitrack report`: a static HTML summary of ROI per campaign and attribution model over a period.

The figures come from Redis: the campaigns' ROI aggregates and their
event-time history buckets (``roitrack.history``), which the ROI agent writes.
The report is one HTML file with its PNG chart embedded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roitrack.history import Period
from roitrack.i18n import Language
from roitrack.report.data import ReportData, build_report_data
from roitrack.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    data: ReportData


def write_report(
    settings: Settings, out: Path, period: Period, language: Language, client: Any | None = None,
) -> ReportResult:
    """Read the figures from Redis and write the report to ``out``.

    ``client``, when given, is used in place of a Redis client built from the settings.
    """
    from roitrack.report.chart import render_chart
    from roitrack.report.render import render_html

    data = build_report_data(settings, period, client)
    chart = render_chart(data, language) if data.campaigns else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, chart, language), encoding="utf-8")
    log.info("wrote report %s with %d campaign(s)", out, len(data.campaigns))
    return ReportResult(out, data)
