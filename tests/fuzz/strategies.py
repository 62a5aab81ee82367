"""Hypothesis strategies for the fuzz tests: valid events, mutated events, random JSON and raw bytes.

Strategies describe the shape of an input only. The tests fill in unique ids with
``Ids`` when they send it, so every valid event is new even when Hypothesis replays
or shrinks an example.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

#: Event types of the person topics (touchpoints and conversions).
PERSON_TYPES = ("click", "touch", "checkin", "identify", "purchase", "coupon_redemption")
CAMPAIGN_TYPES = ("campaign", "spend")
CONVERSION_TYPES = ("purchase", "coupon_redemption")

#: Values that tend to break parsers and validators, used to replace fields of a valid event.
TRICKY_VALUES: tuple[Any, ...] = (
    None, "", " ", "\u0000", "\u001f", "\u00e9", "\U0001f4a5", "\u202e", "x" * 129, "x" * 513, "x" * 3000,
    0, -1, 1, 1.5, -0.0, 2**63, 2**70, -(2**63), True, False, [], {}, [1, 2], {"a": {"b": [None]}},
    "NaN", "Infinity", "-0", "1e999", "1E+5", "0.000000000001", "0.0000000000001", "-5", "12.345",
    "9999999999.99", "10000000000", "999999999999999.999999999999", "1000000000000000", 10**15 - 1, 10**15,
    "007", " 12.5 ", "12,50", "0x1A",
    "2026-13-40T00:00:00Z", "2026-11-02T10:00:00", "2026-11-02", "1700000000", "1700000000.5",
    "2026-11-02T10:00:00+25:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00", "2999-12-31T23:59:59Z", "2026-11-02T10:00:00.123456789Z",
    "9999-12-31T23:59:59-14:00", "2026-11-02T10:00:00-14:00",
    "eur", "XXX", "EURO", "\u20ac", "<script>alert(1)</script>", "a@b", "not-an-ip", "999.1.1.1", "::1",
    "203.0.113.77", "Googlebot/2.1", "curl/8.0", "' OR 1=1 --", "%00", "\\", "{p0}", "*", "a:b", "a\x1fb",
    "view", "like", "follow", "teleport", "click", "purchase",
)

#: Field names that no event has, or that belong to another event type.
EXTRA_FIELDS = ("unknown", "kind", "amount", "coupon_code", "consent", "email", "phone", "ip", "user_agent",
                "anonymous_id", "user_id", "schema_version", "events", "type", "discount", "currency")


class Ids:
    """Unique ids for one test run: ``<prefix>-<run>-<n>``."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        self._counter = itertools.count()

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self.run}-{next(self._counter)}"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def template(event_type: str, ids: Ids, at: datetime, person: str, campaign: str) -> dict[str, Any]:
    """Return a valid event of ``event_type`` with new ids."""
    time_text = iso(at)
    envelope = {"event_id": ids.new("e"), "event_time": time_text, "user_id": person}
    if event_type == "click":
        return {"type": "click", **envelope, "campaign_id": campaign, "channel": "instagram"}
    if event_type == "touch":
        return {"type": "touch", **envelope, "campaign_id": campaign, "channel": "tiktok", "kind": "view"}
    if event_type == "checkin":
        return {"type": "checkin", **envelope, "venue_id": ids.new("venue"), "campaign_id": campaign}
    if event_type == "identify":
        return {"type": "identify", **envelope, "anonymous_id": ids.new("anon")}
    if event_type == "purchase":
        return {"type": "purchase", **envelope, "order_id": ids.new("order"), "amount": "12.50", "currency": "EUR"}
    if event_type == "coupon_redemption":
        return {"type": "coupon_redemption", **envelope, "coupon_code": "FUZZ10", "order_id": ids.new("order")}
    if event_type == "campaign":
        return {"type": "campaign", "campaign_id": campaign, "name": "Fuzz campaign", "channel": "instagram",
                "start": time_text, "margin": "0.3"}
    if event_type == "credit":
        return {"type": "credit", "credit_id": ids.new("credit"), "conversion_id": ids.new("conversion"),
                "campaign_id": campaign, "event_time": time_text, "weights": {"last_touch": "1", "linear": "0.5"},
                "revenue": {"last_touch": "12.5", "linear": "6.25"}}
    if event_type == "spend":
        return {"type": "spend", "spend_id": ids.new("spend"), "campaign_id": campaign, "amount": "10.00",
                "currency": "EUR", "period_start": time_text, "period_end": iso(at + timedelta(days=1))}
    raise ValueError(f"no template for event type {event_type!r}")


json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
#: ISO 8601 times of any year, with offsets of up to 14 hours.
odd_times = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)


def nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


replacement_values = st.sampled_from(TRICKY_VALUES) | json_values | odd_times | st.integers(1, 200).map(nested_list)


@dataclass(frozen=True)
class Mutation:
    """Changes to apply to a valid event: fields to replace or add, and fields to delete."""

    replace: tuple[tuple[str | None, Any], ...]  # a None name means: pick one of the event's own fields
    delete: tuple[str | None, ...]

    def apply(self, event: dict[str, Any], pick: int) -> dict[str, Any]:
        mutated = dict(event)
        names = sorted(event)
        for position, (name, value) in enumerate(self.replace):
            field = name if name is not None else names[(pick + position) % len(names)]
            mutated[field] = value
        for position, name in enumerate(self.delete):
            field = name if name is not None else names[(pick + 7 * position) % len(names)]
            mutated.pop(field, None)
        return mutated


mutations = st.builds(
    Mutation,
    replace=st.lists(st.tuples(st.none() | st.sampled_from(EXTRA_FIELDS), replacement_values), max_size=3).map(tuple),
    delete=st.lists(st.none() | st.sampled_from(EXTRA_FIELDS), max_size=2).map(tuple),
)


@dataclass(frozen=True)
class Variant:
    """Valid optional fields that steer an event into each of the worker's outcomes.

    Consent false, bot user agents, repeated ids, ignored touch kinds, a check-in without a
    campaign, shared IP addresses (click floods), anonymous ids (identity links), and event
    times far behind (late) or ahead (future) of the other events.
    """

    consent: bool | None
    user_agent: str | None
    ip: str | None
    email: str | None
    with_anonymous_id: bool
    kind: str
    drop_campaign: bool
    time_shift_s: int
    repeat_previous_id: bool

    def apply(self, event: dict[str, Any], previous_id: str | None, ids: Ids) -> dict[str, Any]:
        varied = dict(event)
        if varied["type"] in CAMPAIGN_TYPES:
            return varied
        for name, value in (("consent", self.consent), ("user_agent", self.user_agent), ("ip", self.ip),
                            ("email", self.email)):
            if value is not None:
                varied[name] = value
        if self.with_anonymous_id and "anonymous_id" not in varied:
            varied["anonymous_id"] = ids.new("anon")
        if varied["type"] == "touch":
            varied["kind"] = self.kind
        if varied["type"] == "checkin" and self.drop_campaign:
            del varied["campaign_id"]
        moment = datetime.fromisoformat(varied["event_time"].replace("Z", "+00:00"))
        varied["event_time"] = iso(moment + timedelta(seconds=self.time_shift_s))
        if self.repeat_previous_id and previous_id is not None:
            varied["event_id"] = previous_id
        return varied


variants = st.builds(
    Variant,
    consent=st.sampled_from([None, None, True, False]),
    user_agent=st.sampled_from([None, None, "Mozilla/5.0 (X11; Linux x86_64)", "Googlebot/2.1", "curl/8.0"]),
    ip=st.sampled_from([None, "203.0.113.77", "203.0.113.78", "2001:db8::1"]),
    email=st.sampled_from([None, "Alice.Fuzz@Example.COM"]),
    with_anonymous_id=st.booleans(),
    kind=st.sampled_from(["view", "like", "share", "comment", "follow"]),
    drop_campaign=st.booleans(),
    time_shift_s=st.sampled_from([0, 0, 0, -60, -3600, -4 * 86400, 400, 10**6]),
    repeat_previous_id=st.sampled_from([False] * 5 + [True]),
)


@dataclass(frozen=True)
class ItemShape:
    """One item of a request or a batch message: a varied or mutated event of a type, or any JSON value."""

    kind: str  # "variant", "mutated" or "random"
    event_type: str
    variant: Variant | None
    mutation: Mutation | None
    value: Any
    pick: int


def item_shapes(event_types: tuple[str, ...]) -> st.SearchStrategy[ItemShape]:
    varied = st.builds(ItemShape, kind=st.just("variant"), event_type=st.sampled_from(event_types),
                       variant=variants, mutation=st.none(), value=st.none(), pick=st.just(0))
    mutated = st.builds(ItemShape, kind=st.just("mutated"), event_type=st.sampled_from(event_types),
                        variant=st.none(), mutation=mutations, value=st.none(), pick=st.integers(0, 50))
    random = st.builds(ItemShape, kind=st.just("random"), event_type=st.just(""), variant=st.none(),
                       mutation=st.none(), value=json_values, pick=st.just(0))
    return st.one_of(varied, varied, mutated, mutated, random)


def materialize(
    shape: ItemShape, ids: Ids, at: datetime, campaign: str, person: str | None = None, previous_id: str | None = None
) -> Any:
    """Turn an item shape into the JSON value to send, with new ids; ``person`` defaults to a new one."""
    if shape.kind == "random":
        return shape.value
    event = template(shape.event_type, ids, at, person or ids.new("m"), campaign)
    if shape.variant is not None:
        return shape.variant.apply(event, previous_id, ids)
    assert shape.mutation is not None
    return shape.mutation.apply(event, shape.pick)


def event_id_of(item: Any) -> str | None:
    return item.get("event_id") if isinstance(item, dict) and isinstance(item.get("event_id"), str) else None


def materialize_all(shapes: list[ItemShape], ids: Ids, at: datetime, campaign: str, person: str | None = None) -> list[Any]:
    """Materialize the items of one request or message; a repeated id repeats the previous item's."""
    items: list[Any] = []
    previous_id: str | None = None
    for shape in shapes:
        item = materialize(shape, ids, at, campaign, person, previous_id)
        previous_id = event_id_of(item) or previous_id
        items.append(item)
    return items


def encode_json(value: Any) -> bytes:
    """Serialize any generated value; integers beyond 64 bits and lone surrogates are kept as they are."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


#: Nesting depths of generated JSON. orjson parses up to 1,024 levels but serializes only
#: 254, so depths of 255 to 1,024 reach code that serializes them again.
nesting_depths = st.integers(1, 20_000)

raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda depth: b"[" * depth + b"]" * depth, nesting_depths),
    st.builds(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth, nesting_depths),
    st.just(b'{"type": "click", "event_id": "\xff\xfe"}'),
    st.just(b""),
    st.just(b"null"),
    st.just(b"[]"),
    st.just(b"{}"),
    st.just(b'{"events": 5}'),
)
