"""The worker's query API on the real broker and Redis, checked against docs/openapi.json.

One worker with its web server on a free port serves the module. The fixture
produces one journey (a campaign with spend, a visitor's click under an
anonymous id, an identify, the user's click and a purchase) and waits until
the API shows its attribution and the campaign's conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from roitrack.settings import Settings
from roitrack.topics import create_topics
from tests.conftest import _delete_namespace
from tests.harness import (
    WorkerProcess,
    click,
    ids,
    latest_by_campaign,
    purchase,
    read_topic,
    send,
    unique_settings,
    wait_for,
)
from tests.web_client import OpenApiDocument, free_port, get, wait_for_status

TOKEN = "api-token-" + "7f3a9c"
CAMPAIGNS = "/api/v1/campaigns"
ROI = "/api/v1/campaigns/{campaign_id}/roi"
ATTRIBUTION = "/api/v1/attributions/{order_id}"
TOUCHPOINTS = "/api/v1/people/{person_id}/touchpoints"


@dataclass(frozen=True)
class Journey:
    settings: Settings
    base_url: str
    campaign: str
    person: str
    anonymous: str
    order_id: str
    click_ids: tuple[str, str]


@pytest.fixture(scope="module")
def openapi() -> OpenApiDocument:
    return OpenApiDocument()


@pytest.fixture(scope="module")
def journey(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    settings = unique_settings(
        kafka_bootstrap, redis_url, web_enabled=True, web_port=free_port(), api_tokens=(TOKEN,),
    )
    create_topics(settings, kafka_bootstrap)
    worker = WorkerProcess(settings, tmp_path_factory.mktemp("api-worker")).start()
    base_url = f"http://127.0.0.1:{settings.web_port}"
    try:
        wait_for_status(base_url, "/readyz", 200, timeout_s=60)
        campaign, person, anonymous = ids("api-camp"), ids("api-user"), ids("api-anon")
        send(settings, settings.topic_campaigns, campaign, {
            "type": "campaign", "campaign_id": campaign, "name": "Query API campaign", "channel": "tiktok",
            "start": "2026-11-01T00:00:00Z", "margin": "0.5",
        })
        send(settings, settings.topic_spend, campaign, {
            "type": "spend", "spend_id": ids("spend"), "campaign_id": campaign, "amount": "20", "currency": "EUR",
            "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-03T00:00:00Z",
        })
        anonymous_click = {**click(anonymous, campaign, "2026-11-02T08:00:00Z"), "user_id": None,
                           "anonymous_id": anonymous, "ip": "203.0.113.77", "email": "visitor@example.com"}
        send(settings, settings.topic_touchpoints, anonymous, anonymous_click)
        send(settings, settings.topic_touchpoints, person, {
            "type": "identify", "event_id": ids("identify"), "event_time": "2026-11-02T08:30:00Z",
            "user_id": person, "anonymous_id": anonymous,
        })
        user_click = click(person, campaign, "2026-11-02T09:00:00Z")
        send(settings, settings.topic_touchpoints, person, user_click)
        bought = purchase(person, "2026-11-02T10:00:00Z", amount="60")
        send(settings, settings.topic_conversions, person, bought)

        path = ATTRIBUTION.format(order_id=bought["order_id"])
        wait_for_status(base_url, path, 200, timeout_s=60, token=TOKEN)

        def counted() -> bool:
            reply = get(base_url, ROI.format(campaign_id=campaign), token=TOKEN, window="lifetime")
            return reply.status == 200 and reply.json()["windows"][0]["models"]["last_touch"]["conversions"] == "1"

        wait_for(counted, 60, "the campaign's conversion in the query API", worker)
        yield Journey(settings, base_url, campaign, person, anonymous, bought["order_id"],
                      (anonymous_click["event_id"], user_click["event_id"]))
    finally:
        assert worker.stop() == 0, worker.log_tail()
        log_text = worker.log_text()
        assert "Traceback" not in log_text, log_text[-4000:]
        assert TOKEN not in log_text
        _delete_namespace(settings.redis_url, settings.redis_namespace)


def test_openapi_served_matches_file(journey: Journey, openapi: OpenApiDocument) -> None:
    reply = get(journey.base_url, "/openapi.json")

    assert reply.status == 200
    assert reply.json() == openapi.document


def test_health_and_readiness(journey: Journey, openapi: OpenApiDocument) -> None:
    health = openapi.validate("/healthz", get(journey.base_url, "/healthz"))
    ready = openapi.validate("/readyz", get(journey.base_url, "/readyz"))

    assert health == {"status": "ok"}
    assert ready["status"] == "ready"
    assert ready["redis"]["ok"] is True
    assigned = ready["partitions"]["assigned"]
    assert assigned[journey.settings.topic_touchpoints] == list(range(journey.settings.person_partitions))
    assert assigned[journey.settings.topic_credits] == list(range(journey.settings.campaign_partitions))


def test_campaign_list(journey: Journey, openapi: OpenApiDocument) -> None:
    body = openapi.validate(CAMPAIGNS, get(journey.base_url, CAMPAIGNS, token=TOKEN))

    listed = {campaign["campaign_id"]: campaign for campaign in body["campaigns"]}
    assert listed[journey.campaign]["name"] == "Query API campaign"
    assert listed[journey.campaign]["channel"] == "tiktok"
    assert body["count"] == len(body["campaigns"])
    assert [campaign["campaign_id"] for campaign in body["campaigns"]] == sorted(listed)


def test_campaign_roi_matches_roi_update(journey: Journey, openapi: OpenApiDocument) -> None:
    settings = journey.settings
    path = ROI.format(campaign_id=journey.campaign)

    body = openapi.validate(ROI, get(journey.base_url, path, token=TOKEN))

    assert [window["window"] for window in body["windows"]] == ["1h", "24h", "7d", "lifetime"]
    assert body["channel"] == "tiktok"
    assert body["margin"] == "0.5"
    lifetime = body["windows"][-1]
    # ROI = (60 x 0.5 - 20) / 20, ROAS = 60 / 20, CPA = 20 / 1
    assert Decimal(lifetime["spend"]) == 20
    assert Decimal(lifetime["roi"]) == Decimal("0.5")
    assert Decimal(lifetime["roas"]) == 3
    assert Decimal(lifetime["cpa"]) == 20
    latest: dict[str, Any] = {}

    def published() -> bool:
        latest.update(latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=0.5)))
        update = latest.get(journey.campaign)
        return update is not None and update["models"]["last_touch"]["conversions"] == "1"

    wait_for(published, 60, "the RoiUpdate with the conversion")
    update = latest[journey.campaign]
    for name in ("spend", "roi", "roas", "cpa", "models", "default_model"):
        assert lifetime[name] == update[name], name
    assert body["sequence"] >= update["sequence"]


def test_campaign_roi_filters(journey: Journey, openapi: OpenApiDocument) -> None:
    path = ROI.format(campaign_id=journey.campaign)

    body = openapi.validate(ROI, get(journey.base_url, path, token=TOKEN, window="24h", model="linear"))

    assert [window["window"] for window in body["windows"]] == ["24h"]
    assert list(body["windows"][0]["models"]) == ["linear"]
    assert body["windows"][0]["window_end"] is not None


@pytest.mark.parametrize(("parameter", "value"), [("window", "2h"), ("model", "markov")])
def test_campaign_roi_bad_parameter(journey: Journey, openapi: OpenApiDocument, parameter: str, value: str) -> None:
    path = ROI.format(campaign_id=journey.campaign)

    body = openapi.validate(ROI, get(journey.base_url, path, token=TOKEN, **{parameter: value}))

    assert body["status"] == 400
    assert body["parameter"] == parameter
    assert body["value"] == value
    assert parameter in body["error"]
    assert value in body["error"]


def test_campaign_roi_bad_id(journey: Journey, openapi: OpenApiDocument) -> None:
    too_long = "c" * 129

    body = openapi.validate(ROI, get(journey.base_url, ROI.format(campaign_id=too_long), token=TOKEN))

    assert body["status"] == 400
    assert body["parameter"] == "campaign_id"
    assert body["value"] == too_long[:128] + "..."


def test_unknown_campaign_is_json_404(journey: Journey, openapi: OpenApiDocument) -> None:
    missing = ids("no-such-camp")

    body = openapi.validate(ROI, get(journey.base_url, ROI.format(campaign_id=missing), token=TOKEN))

    assert body["status"] == 404
    assert missing in body["error"]


def test_attribution_by_order(journey: Journey, openapi: OpenApiDocument) -> None:
    path = ATTRIBUTION.format(order_id=journey.order_id)

    body = openapi.validate(ATTRIBUTION, get(journey.base_url, path, token=TOKEN))
    narrowed = openapi.validate(ATTRIBUTION, get(journey.base_url, path, token=TOKEN, person_id=journey.person))

    assert narrowed == body
    assert body["order_id"] == journey.order_id
    [attribution] = body["attributions"]
    assert attribution["person_id"] == journey.person
    assert attribution["basis"] == "touchpoints"
    assert {touch["event_id"] for touch in attribution["touchpoints"]} == set(journey.click_ids)
    assert attribution["credits"]["last_touch"] == [{"campaign_id": journey.campaign, "weight": "1", "revenue": "60"}]


def test_unknown_order_is_json_404(journey: Journey, openapi: OpenApiDocument) -> None:
    missing = ids("no-such-order")

    reply = get(journey.base_url, ATTRIBUTION.format(order_id=missing), token=TOKEN)
    body = openapi.validate(ATTRIBUTION, reply)

    assert reply.status == 404
    assert missing in body["error"]


def test_touchpoints_with_linked_ids(journey: Journey, openapi: OpenApiDocument) -> None:
    path = TOUCHPOINTS.format(person_id=quote(journey.person, safe=""))

    reply = get(journey.base_url, path, token=TOKEN)
    body = openapi.validate(TOUCHPOINTS, reply)

    assert [touch["event_id"] for touch in body["touchpoints"]] == [journey.click_ids[1], journey.click_ids[0]]
    assert [touch["linked"] for touch in body["touchpoints"]] == [False, True]
    assert body["linked_ids"] == 1
    assert journey.anonymous.encode() not in reply.body
    assert b"203.0.113" not in reply.body
    assert b"visitor@example.com" not in reply.body
    assert reply.headers["Cache-Control"] == "no-store"
    limited = openapi.validate(TOUCHPOINTS, get(journey.base_url, path, token=TOKEN, limit="1"))
    assert [touch["event_id"] for touch in limited["touchpoints"]] == [journey.click_ids[1]]


@pytest.mark.parametrize("limit", ["0", "abc", "100000"])
def test_touchpoints_bad_limit(journey: Journey, openapi: OpenApiDocument, limit: str) -> None:
    path = TOUCHPOINTS.format(person_id=journey.person)

    body = openapi.validate(TOUCHPOINTS, get(journey.base_url, path, token=TOKEN, limit=limit))

    assert body["status"] == 400
    assert body["parameter"] == "limit"
    assert body["value"] == limit


@pytest.mark.parametrize(("template", "path"), [
    (CAMPAIGNS, CAMPAIGNS),
    (ROI, ROI.format(campaign_id="x")),
    (ATTRIBUTION, ATTRIBUTION.format(order_id="x")),
    (TOUCHPOINTS, TOUCHPOINTS.format(person_id="x")),
])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_endpoints_need_token(
    journey: Journey, openapi: OpenApiDocument, template: str, path: str, token: str | None,
) -> None:
    reply = get(journey.base_url, path, token=token)

    body = openapi.validate(template, reply)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert "bearer token" in body["error"]


def test_unknown_api_path_is_json_404(journey: Journey) -> None:
    reply = get(journey.base_url, "/api/v1/nothing-here", token=TOKEN)

    assert reply.status == 404
    body = orjson.loads(reply.body)
    assert body["status"] == 404
    assert "/api/v1/nothing-here" in body["error"]

