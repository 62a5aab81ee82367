"""Builders of RoiUpdate records and rules for the alert unit tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.outputs import ATTRIBUTION_MODELS, RoiUpdate

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
T0_MS = int(T0.timestamp() * 1000)


def roi_update(
    sequence: int,
    *,
    at_s: float = 0,
    campaign: str = "spring",
    window: str = "lifetime",
    spend: str = "100",
    conversions: str = "10",
    revenue: str = "300",
    roi: str | None = "0.2",
    roas: str | None = "3",
    cpa: str | None = "10",
    window_end_s: float | None = None,
) -> RoiUpdate:
    """Build an update ``at_s`` seconds after T0 (its emitted_at) with the same figures under every model."""
    figures = {"conversions": conversions, "revenue": revenue, "roi": roi, "roas": roas, "cpa": cpa}
    value: dict[str, Any] = {
        "campaign_id": campaign,
        "campaign_name": f"{campaign} campaign",
        "window": window,
        "window_s": None if window == "lifetime" else 3600,
        "window_end": None if window_end_s is None else (T0 + timedelta(seconds=window_end_s)).isoformat(),
        "sequence": sequence,
        "currency": "EUR",
        "margin": "0.4",
        "spend": spend,
        "default_model": "last_touch",
        "roi": roi,
        "roas": roas,
        "cpa": cpa,
        "models": {model: figures for model in ATTRIBUTION_MODELS},
        "emitted_at": (T0 + timedelta(seconds=at_s)).isoformat(),
    }
    return RoiUpdate.model_validate(value)


def ms(at_s: float) -> int:
    """Epoch milliseconds ``at_s`` seconds after T0."""
    return T0_MS + int(at_s * 1000)
