"""Social facts: per-person facts forwarded to the campaign partitions that count them.

Engagements and referral decisions are made on person partitions, but their
totals must be counted in one place per campaign. The attribution agent sends
them on the credits topic keyed by campaign id, as JSON arrays of fact
objects, and the ROI agent counts them. Each fact carries an id derived from
its source event's ids, never from batch boundaries, so a fact sent again
after a crash or a retry is dropped by id, as credits are.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Annotated, Any, Sequence, Union

from pydantic import Field, TypeAdapter, ValidationError

from roitrack.referrals import ReferralDecision
from schemas.decode import describe_value
from schemas.events import SocialTouch
from schemas.outputs import EngagementFact, FieldError, ReferralFact
from streams.records import Outgoing, decimal_text, iso_ms

FACT_TYPES = frozenset({"engagement", "referral"})
#: Facts packed into one message at most, which keeps a message far below 1 MB.
MAX_FACTS_PER_MESSAGE = 500
_SEPARATOR = "\x1f"  # ids cannot contain control characters, so joined ids never collide

Fact = EngagementFact | ReferralFact
_FACT_ADAPTER: TypeAdapter[Any] = TypeAdapter(
    Annotated[Union[EngagementFact, ReferralFact], Field(discriminator="type")]
)


def hashed_id(*parts: str) -> str:
    """Return the SHA-256 hex of ``parts`` joined by a control character."""
    return hashlib.sha256(_SEPARATOR.join(parts).encode("utf-8")).hexdigest()


def engagement_fact(event: SocialTouch) -> dict[str, Any]:
    """Build the fact of one engagement; a share of a deal names the sharer as advocate."""
    fact: dict[str, Any] = {
        "type": "engagement",
        "fact_id": hashed_id("engagement", event.person_id, event.event_id, event.campaign_id),
        "campaign_id": event.campaign_id,
        "channel": event.channel,
        "kind": event.kind,
        "event_time": iso_ms(event.event_time_ms),
    }
    if event.kind == "share" and event.deal_id is not None:
        fact["advocate_id"] = event.person_id
        fact["deal_id"] = event.deal_id
    return fact


def referral_fact(decision: ReferralDecision) -> dict[str, Any]:
    """Build the fact of one referral decision."""
    return {
        "type": "referral",
        "fact_id": hashed_id(
            "referral", decision.person_id, decision.action, decision.item_id,
            decision.campaign_id, decision.advocate_id,
        ),
        "campaign_id": decision.campaign_id,
        "advocate_id": decision.advocate_id,
        "person_id": decision.person_id,
        "action": decision.action,
        "with_code": decision.with_code,
        "outcome": decision.outcome,
        "new_person": decision.new_person,
        "new_customer": decision.new_customer,
        "revenue": decimal_text(decision.revenue),
        "deal_id": decision.deal_id,
        "event_time": iso_ms(decision.time_ms),
    }


def pack_facts(topic: str, facts: Sequence[dict[str, Any]]) -> list[Outgoing]:
    """Group facts by campaign into messages of at most MAX_FACTS_PER_MESSAGE facts."""
    by_campaign: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for fact in facts:
        by_campaign[fact["campaign_id"]].append(fact)
    messages = []
    for campaign_id, items in sorted(by_campaign.items()):
        for start in range(0, len(items), MAX_FACTS_PER_MESSAGE):
            # Outgoing.value is a JSON object for the other messages; a list is sent the same way.
            chunk: Any = items[start : start + MAX_FACTS_PER_MESSAGE]
            messages.append(Outgoing(topic, campaign_id, chunk))
    return messages


def is_fact_message(value: Any) -> bool:
    """Tell a fact message (an array, or an object with a fact type) from a credit."""
    if isinstance(value, list):
        return True
    if not isinstance(value, dict):
        return False
    fact_type = value.get("type")
    return isinstance(fact_type, str) and fact_type in FACT_TYPES


def decode_facts(value: Any, campaign_key: str | None) -> list[tuple[int | None, Fact | FieldError]]:
    """Validate the facts of one message; return (index in the array, fact or the first problem)."""
    items = value if isinstance(value, list) else [value]
    indexed = isinstance(value, list)
    if not items:
        return [(None, FieldError(
            field="(message)", value="[]", reason="an array on the credits topic must contain at least one credit or fact",
        ))]
    decoded: list[tuple[int | None, Fact | FieldError]] = []
    for index, item in enumerate(items):
        position = index if indexed else None
        if not isinstance(item, dict):
            decoded.append((position, FieldError(
                field="(fact)", value=f"a JSON {type(item).__name__}", reason="a fact must be a JSON object",
            )))
            continue
        try:
            fact = _FACT_ADAPTER.validate_python(item)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            location = ".".join(str(part) for part in error["loc"][1:] or error["loc"]) or "(fact)"
            error_value = None if error["type"] == "missing" else _describe(error.get("input"))
            decoded.append((position, FieldError(field=location, value=error_value, reason=error["msg"])))
            continue
        if campaign_key is not None and fact.campaign_id != campaign_key:
            decoded.append((position, FieldError(
                field="campaign_id", value=fact.campaign_id,
                reason=f"the message key is {campaign_key!r}; a fact must be keyed by its campaign id",
            )))
            continue
        decoded.append((position, fact))
    return decoded


def _describe(value: Any) -> str | None:
    """Describe an offending value; a value nested deeper than Python's repr() reaches is named, not shown."""
    try:
        return describe_value(value)
    except RecursionError:
        return "(nested too deeply to show)"
