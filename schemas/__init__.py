"""Event and output models of roitrack. Nothing here does I/O."""

from schemas.common import SCHEMA_VERSION, Envelope
from schemas.events import (
    Identify,
    Campaign,
    CheckIn,
    Click,
    CouponRedemption,
    Deal,
    FollowerSnapshot,
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

__all__ = [
    "SCHEMA_VERSION",
    "AdvocateReward",
    "Alert",
    "Attribution",
    "Campaign",
    "CampaignCredit",
    "CheckIn",
    "Click",
    "CouponRedemption",
    "DeadLetter",
    "Deal",
    "DealActivated",
    "DealExpired",
    "EngagementFact",
    "Envelope",
    "FollowerSnapshot",
    "Identify",
    "Impressions",
    "Purchase",
    "ReferralFact",
    "RoiUpdate",
    "SocialTouch",
    "Spend",
]
