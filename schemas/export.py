"""Export JSON Schema for every model, so producers in other languages can validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.common import StrictModel
from schemas.events import (
    Campaign,
    CheckIn,
    Click,
    CouponRedemption,
    Deal,
    FollowerSnapshot,
    Identify,
    Impressions,
    Purchase,
    SocialTouch,
    Spend,
)
from schemas.outputs import (
    AdvocateReward,
    Alert,
    Attribution,
    CampaignCredit,
    DeadLetter,
    DealActivated,
    DealExpired,
    EngagementFact,
    ReferralFact,
    RoiUpdate,
)

EXPORTED_MODELS: tuple[type[StrictModel], ...] = (
    Click,
    SocialTouch,
    CheckIn,
    Identify,
    CouponRedemption,
    Purchase,
    Campaign,
    Deal,
    Spend,
    Impressions,
    FollowerSnapshot,
    Attribution,
    CampaignCredit,
    EngagementFact,
    ReferralFact,
    RoiUpdate,
    DealActivated,
    DealExpired,
    AdvocateReward,
    DeadLetter,
    Alert,
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of each model, by model name."""
    return {model.__name__: model.model_json_schema(mode="validation") for model in EXPORTED_MODELS}


def write_json_schemas(directory: Path) -> list[Path]:
    """Write one ``<Model>.schema.json`` file per model into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": name, **schema}
        path = directory / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        written.append(path)
    return written
