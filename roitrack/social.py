"""A campaign's social state: engagement, referrals and group-buy deals. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from roitrack.deals import DealState
from roitrack.engagement import EngagementAggregate
from roitrack.referrals import ReferralTotals


@dataclass(slots=True)
class SocialAggregate:
    """Everything social that one campaign's partition counts."""

    campaign_id: str
    engagement: EngagementAggregate = field(default_factory=EngagementAggregate)
    referrals: ReferralTotals = field(default_factory=ReferralTotals)
    deals: dict[str, DealState] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.engagement.empty and self.referrals.empty and not self.deals

    def deal(self, deal_id: str) -> DealState:
        """Return the deal, creating an undefined one for purchases that arrive before its definition."""
        state = self.deals.get(deal_id)
        if state is None:
            state = self.deals[deal_id] = DealState(deal_id, self.campaign_id)
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.campaign_id,
            "engagement": self.engagement.to_json(),
            "referrals": self.referrals.to_json(),
            "deals": {deal_id: deal.to_json() for deal_id, deal in self.deals.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SocialAggregate":
        return cls(
            campaign_id=data["id"],
            engagement=EngagementAggregate.from_json(data.get("engagement", {})),
            referrals=ReferralTotals.from_json(data.get("referrals", {})),
            deals={deal_id: DealState.from_json(deal) for deal_id, deal in data.get("deals", {}).items()},
        )
