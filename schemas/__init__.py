"""Event and output models of roitrack. Nothing here does I/O."""

from schemas.common import SCHEMA_VERSION, Envelope
from schemas.events import (
    Identify,
    Campaign,
    CheckIn,
    Click,
    CouponRedemption,
    Purchase,
    SocialTouch,
    Spend,
)
from schemas.outputs import Alert, Attribution, CampaignCredit, DeadLetter, RoiUpdate

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "Attribution",
    "Campaign",
    "CampaignCredit",
    "CheckIn",
    "Click",
    "CouponRedemption",
    "DeadLetter",
    "Envelope",
    "Identify",
    "Purchase",
    "RoiUpdate",
    "SocialTouch",
    "Spend",
]
