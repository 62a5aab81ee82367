"""HTTP collector against the real broker: pixel, click redirect, batch endpoint and privacy.

Each test starts the collector with ``web.AppRunner`` on a free 127.0.0.1 port,
sends real HTTP requests with aiohttp's client, and reads the produced
messages back from Kafka. The module's tests share one set of topics and tell
their messages apart by their own campaign and event ids. The settings point
Redis at a closed port, which shows that the collector never uses it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from kafka import KafkaConsumer
from yarl import URL

from roitrack.collector import STATS_KEY, create_collector_app
from roitrack.collector.browser import TRANSPARENT_GIF
from roitrack.collector.keys import INGESTOR_KEY
from roitrack.settings import Settings
from roitrack.topics import create_topics
from schemas.privacy import normalise_email, normalise_phone, salted_sha256
from streams.state import partition_for_key
from tests.harness import unique_settings

T = TypeVar("T")

SALT = "collector-test-salt"
TOKEN = "test-token-" + uuid.uuid4().hex
SECOND_TOKEN = "second-token-" + uuid.uuid4().hex
ALLOWED_HOSTS = ("allowed.example", ".shop.example")
MAX_BODY_BYTES = 4096
MAX_BATCH_EVENTS = 10
#: Nothing listens here: the collector must work without Redis.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
NO_CACHE = "no-cache, no-store, must-revalidate, private"
T0 = "2026-11-02T10:00:00Z"


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    key: str | None
    raw: bytes

    @property
    def value(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.raw)
        return decoded


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Iterator[Settings]:
    collector_settings = unique_settings(
        kafka_bootstrap,
        CLOSED_REDIS_URL,
        pii_salt=SALT,
        collector_tokens=(TOKEN, SECOND_TOKEN),
        collector_redirect_hosts=ALLOWED_HOSTS,
        collector_max_body_bytes=MAX_BODY_BYTES,
        collector_max_batch_events=MAX_BATCH_EVENTS,
        # One message per event, so the tests can check each event's key and partition;
        # tests/integration/test_collector_packing.py covers packing.
        collector_pack_within_s=0,
    )
    create_topics(collector_settings, kafka_bootstrap)
    yield collector_settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


@asynccontextmanager
async def running_collector(settings: Settings) -> AsyncIterator[tuple[web.Application, str]]:
    """Serve a collector on a free 127.0.0.1 port, and yield the app and its base URL."""
    app = create_collector_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client(cookies: bool = True) -> aiohttp.ClientSession:
    # unsafe=True: the default cookie jar ignores cookies from IP-address hosts.
    jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(cookie_jar=jar)


def read_messages(settings: Settings, *topics: str, idle_s: float = 1.0, max_wait_s: float = 30.0) -> list[Message]:
    """Read whole topics from the beginning, with keys and raw values, until idle for ``idle_s``."""
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    messages: list[Message] = []
    deadline = time.monotonic() + max_wait_s
    last_message = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            if batch:
                last_message = time.monotonic()
                for records in batch.values():
                    for record in records:
                        key = record.key.decode() if record.key is not None else None
                        messages.append(Message(record.topic, record.partition, key, record.value))
            elif time.monotonic() - last_message >= idle_s:
                break
    finally:
        consumer.close()
    return messages


def all_input_topics(settings: Settings) -> tuple[str, ...]:
    return (
        settings.topic_touchpoints,
        settings.topic_conversions,
        settings.topic_campaigns,
        settings.topic_spend,
        settings.topic_dead_letters,
    )


def clicks_of(messages: list[Message], settings: Settings, campaign_id: str) -> list[Message]:
    return [
        message
        for message in messages
        if message.topic == settings.topic_touchpoints and message.value.get("campaign_id") == campaign_id
    ]


def set_cookie_headers(response: aiohttp.ClientResponse) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


def cookie_value(header: str, name: str) -> str:
    first = header.split(";", 1)[0]
    cookie_name, _, value = first.partition("=")
    assert cookie_name.strip() == name, header
    return value.strip()


def cookie_attributes(header: str) -> set[str]:
    return {part.strip().lower() for part in header.split(";")[1:]}


def assert_no_cache(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Cache-Control"] == NO_CACHE
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Expires"] == "0"


# --- Tracking pixel ----------------------------------------------------------


def test_pixel_click_keyed_by_cookie(settings: Settings) -> None:
    campaign = unique("pixel-camp")
    referer = f"https://shop.example/{campaign}?ref=1"
    headers = {"Referer": referer, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) collector-test"}
    query = f"cid={campaign}&ch=instagram&utm_source=ig&utm_medium=social&utm_campaign=spring"

    async def scenario() -> tuple[list[bytes], list[list[str]], list[str], dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            bodies, cookies, content_types = [], [], []
            for _ in range(2):
                async with session.get(f"{base}/p.gif?{query}", headers=headers) as response:
                    assert response.status == 200
                    assert_no_cache(response)
                    bodies.append(await response.read())
                    cookies.append(set_cookie_headers(response))
                    content_types.append(response.headers["Content-Type"])
            return bodies, cookies, content_types, app[STATS_KEY].as_dict()

    bodies, cookies, content_types, stats = run(scenario)

    assert bodies == [TRANSPARENT_GIF, TRANSPARENT_GIF]
    assert len(TRANSPARENT_GIF) == 43
    assert TRANSPARENT_GIF.startswith(b"GIF89a\x01\x00\x01\x00")
    assert content_types == ["image/gif", "image/gif"]
    assert len(cookies[0]) == 1, "the first hit sets the anonymous-id cookie"
    assert cookies[1] == [], "the second hit sends the cookie back, so none is set again"
    anonymous_id = cookie_value(cookies[0][0], settings.cookie_name)
    uuid.UUID(anonymous_id)
    attributes = cookie_attributes(cookies[0][0])
    assert "path=/" in attributes
    assert f"max-age={settings.cookie_max_age_s}" in attributes
    assert "samesite=lax" in attributes
    assert "httponly" in attributes
    assert "secure" not in attributes
    assert not any(attribute.startswith("domain=") for attribute in attributes)
    assert stats["pixel"]["accepted"] == 2

    clicks = clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)
    assert len(clicks) == 2
    now = datetime.now(timezone.utc)
    for message in clicks:
        click = message.value
        assert message.key == anonymous_id
        assert message.partition == partition_for_key(anonymous_id.encode(), settings.person_partitions)
        assert click["type"] == "click"
        assert click["anonymous_id"] == anonymous_id
        assert "user_id" not in click
        assert click["channel"] == "instagram"
        assert click["utm_source"] == "ig"
        assert click["utm_medium"] == "social"
        assert click["utm_campaign"] == "spring"
        assert click["landing_url"] == referer
        assert click["source"] == "pixel"
        assert click["ip"] == "127.0.0.0", "the collector truncates the address before producing"
        assert click["user_agent"] == headers["User-Agent"]
        event_time = datetime.fromisoformat(click["event_time"].replace("Z", "+00:00"))
        assert abs(now - event_time) < timedelta(minutes=2)
        uuid.UUID(click["event_id"])
    assert clicks[0].value["event_id"] != clicks[1].value["event_id"]


def test_pixel_cookie_attributes_from_settings(settings: Settings) -> None:
    secure_settings = settings.model_copy(
        update={"cookie_secure": True, "cookie_domain": "shop.example", "cookie_max_age_s": 3600, "cookie_name": "tid"}
    )

    async def scenario() -> list[str]:
        async with running_collector(secure_settings) as (_, base), client(cookies=False) as session:
            async with session.get(f"{base}/p.gif?cid={unique('camp')}&ch=tiktok") as response:
                assert response.status == 200
                return set_cookie_headers(response)

    headers = run(scenario)

    assert len(headers) == 1
    cookie_value(headers[0], "tid")
    attributes = cookie_attributes(headers[0])
    assert "secure" in attributes
    assert "domain=shop.example" in attributes
    assert "max-age=3600" in attributes
    assert "httponly" in attributes
    assert "samesite=lax" in attributes


def test_pixel_with_uid_or_aid_sets_no_cookie(settings: Settings) -> None:
    campaign = unique("ids-camp")
    user_id = unique("user")
    anonymous_id = unique("anon")
    landing = "https://shop.example/explicit"

    async def scenario() -> list[list[str]]:
        async with running_collector(settings) as (_, base), client(cookies=False) as session:
            cookies = []
            for person in (f"uid={user_id}", f"aid={anonymous_id}"):
                url = f"{base}/p.gif?cid={campaign}&ch=facebook&{person}&eid={unique('e')}&url={landing}"
                async with session.get(url, headers={"Referer": "https://other.example/"}) as response:
                    assert response.status == 200
                    assert await response.read() == TRANSPARENT_GIF
                    cookies.append(set_cookie_headers(response))
            return cookies

    cookies = run(scenario)

    assert cookies == [[], []]
    clicks = {message.key: message.value for message in clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)}
    assert set(clicks) == {user_id, anonymous_id}
    assert clicks[user_id]["user_id"] == user_id
    assert "anonymous_id" not in clicks[user_id]
    assert clicks[anonymous_id]["anonymous_id"] == anonymous_id
    assert clicks[user_id]["landing_url"] == landing, "the url parameter wins over the Referer"


def test_pixel_replaces_malformed_cookie(settings: Settings) -> None:
    marker = unique("cookie-marker")

    async def scenario() -> tuple[list[str], bytes]:
        async with running_collector(settings) as (_, base), client(cookies=False) as session:
            headers = {"Cookie": f'{settings.cookie_name}="<script>{marker}</script>"'}
            async with session.get(f"{base}/p.gif?cid={unique('camp')}&ch=x", headers=headers) as response:
                return set_cookie_headers(response), await response.read()

    cookies, body = run(scenario)

    assert len(cookies) == 1
    uuid.UUID(cookie_value(cookies[0], settings.cookie_name))
    assert marker not in cookies[0]
    assert body == TRANSPARENT_GIF


def test_invalid_pixel_returns_gif_and_dead_letter(settings: Settings) -> None:
    event_id = unique("bad-pixel")
    long_campaign = "c" * 200

    async def scenario() -> dict[str, dict[str, int]]:
        async with running_collector(settings) as (app, base), client() as session:
            for query in (f"ch=instagram&eid={event_id}-1", f"cid={long_campaign}&ch=instagram&eid={event_id}-2"):
                async with session.get(f"{base}/p.gif?{query}", headers={"User-Agent": "agent-" + event_id}) as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "image/gif"
                    assert_no_cache(response)
                    assert await response.read() == TRANSPARENT_GIF
            return app[STATS_KEY].as_dict()

    stats = run(scenario)

    assert stats["pixel"]["rejected"] == 2
    messages = read_messages(settings, settings.topic_touchpoints, settings.topic_dead_letters)
    assert not [m for m in messages if m.topic == settings.topic_touchpoints and event_id in m.raw.decode()]
    letters = {
        orjson.loads(m.value["payload"])["event_id"]: m.value
        for m in messages
        if m.topic == settings.topic_dead_letters and event_id in m.value["payload"]
    }
    assert set(letters) == {f"{event_id}-1", f"{event_id}-2"}
    for letter in letters.values():
        assert letter["type"] == "dead_letter"
        assert letter["reason"] == "invalid"
        assert letter["step"] == "collector.pixel"
        assert letter["source_topic"] == "collector"
        assert letter["source_partition"] == -1
        assert letter["source_offset"] == -1
        assert letter["event_index"] is None
        payload = orjson.loads(letter["payload"])
        assert "ip" not in payload
        assert "user_agent" not in payload
        assert "agent-" + event_id not in letter["payload"]
    assert [error["field"] for error in letters[f"{event_id}-1"]["errors"]] == ["campaign_id"]
    assert letters[f"{event_id}-1"]["errors"][0]["reason"] == "Field required"
    assert [error["field"] for error in letters[f"{event_id}-2"]["errors"]] == ["campaign_id"]


def test_pixel_returns_gif_when_broker_fails(settings: Settings) -> None:
    async def scenario() -> tuple[int, bytes, dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            await app[INGESTOR_KEY].packer.producer.stop()
            async with session.get(f"{base}/p.gif?cid={unique('camp')}&ch=instagram") as response:
                return response.status, await response.read(), app[STATS_KEY].as_dict()

    status, body, stats = run(scenario)

    assert status == 200
    assert body == TRANSPARENT_GIF
    assert stats["pixel"]["failed"] == 1
    assert "accepted" not in stats["pixel"]


def test_head_pixel_records_nothing(settings: Settings) -> None:
    async def scenario() -> tuple[int, dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            async with session.head(f"{base}/p.gif?cid={unique('camp')}&ch=instagram") as response:
                return response.status, app[STATS_KEY].as_dict()

    status, stats = run(scenario)

    assert status == 405
    assert stats == {}


# --- Click redirect ----------------------------------------------------------


def test_redirect_to_allowed_hosts(settings: Settings) -> None:
    campaign = unique("redirect-camp")
    targets = [
        "https://allowed.example/landing?x=1&y=two",
        "http://allowed.example:8443/p",
        "https://ALLOWED.example./upper",
        "https://shop.example/",
        "https://deep.sub.shop.example/product/42",
    ]

    async def scenario() -> tuple[list[str], list[list[str]]]:
        async with running_collector(settings) as (_, base), client() as session:
            locations, cookies = [], []
            for target in targets:
                params = {"cid": campaign, "ch": "instagram", "to": target, "utm_source": "ig"}
                async with session.get(f"{base}/r", params=params, allow_redirects=False) as response:
                    assert response.status == 302, target
                    assert_no_cache(response)
                    locations.append(response.headers["Location"])
                    cookies.append(set_cookie_headers(response))
            return locations, cookies

    locations, cookies = run(scenario)

    assert locations == [str(URL(target)) for target in targets]
    assert locations[0] == targets[0]
    assert len(cookies[0]) == 1
    assert all(not later for later in cookies[1:])
    anonymous_id = cookie_value(cookies[0][0], settings.cookie_name)

    clicks = clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)
    assert sorted(message.value["landing_url"] for message in clicks) == sorted(locations)
    for message in clicks:
        assert message.key == anonymous_id
        assert message.value["anonymous_id"] == anonymous_id
        assert message.value["source"] == "redirect"
        assert message.value["utm_source"] == "ig"


def test_long_landing_url_cut_keeps_click(settings: Settings) -> None:
    campaign = unique("long-url-camp")
    pixel_url = f"https://shop.example/{campaign}/" + "b" * 2100
    target = f"https://deep.shop.example/{campaign}/" + "a" * 3000

    async def scenario() -> tuple[int, int, str, dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            params = {"cid": campaign, "ch": "instagram", "url": pixel_url, "utm_content": "c" * 600}
            async with session.get(f"{base}/p.gif", params=params) as response:
                pixel_status = response.status
            params = {"cid": campaign, "ch": "instagram", "to": target}
            async with session.get(f"{base}/r", params=params, allow_redirects=False) as response:
                return pixel_status, response.status, response.headers["Location"], app[STATS_KEY].as_dict()

    pixel_status, redirect_status, location, stats = run(scenario)

    assert pixel_status == 200
    assert redirect_status == 302
    assert location == target, "the redirect target is never cut"
    assert stats == {"pixel": {"accepted": 1}, "redirect": {"accepted": 1}}
    clicks = clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)
    landing_urls = sorted((message.value["source"], message.value["landing_url"]) for message in clicks)
    assert landing_urls == [("pixel", pixel_url[:2048]), ("redirect", target[:2048])]
    # A long UTM parameter is cut to the schema's 512 characters too.
    assert [message.value.get("utm_content") for message in clicks if message.value["source"] == "pixel"] == ["c" * 512]


BLOCKED_TARGETS = [
    ("missing", None),
    ("empty", ""),
    ("javascript", "javascript:alert(document.domain)//allowed.example/{marker}"),
    ("data url", "data:text/html,<script>alert('{marker}')</script>"),
    ("scheme-relative", "//evil.example/allowed.example/{marker}"),
    ("path only", "/{marker}"),
    ("ftp", "ftp://allowed.example/{marker}"),
    ("no slashes", "https:allowed.example/{marker}"),
    ("other host", "https://evil.example/{marker}"),
    ("user info before allowed host", "https://evil.example@allowed.example/{marker}"),
    ("allowed host as user info", "https://allowed.example@evil.example/{marker}"),
    ("encoded slash in user info", "https://allowed.example%2F@evil.example/{marker}"),
    ("backslash", "https://allowed.example\\@evil.example/{marker}"),
    ("allowed name as prefix", "https://allowed.example.evil.example/{marker}"),
    ("subdomain of exact entry", "https://sub.allowed.example/{marker}"),
    ("suffix without dot", "https://evilshop.example/{marker}"),
    ("percent-encoded host", "https://%61llowed.example/{marker}"),
    ("unicode host", "https://b\u00fccher.shop.example/{marker}"),
    ("space in host", "https://allowed.example /{marker}"),
    ("header injection", "https://allowed.example/{marker}\r\nSet-Cookie: injected=1"),
    ("ipv6 loopback", "http://[::1]/{marker}"),
]


def test_redirect_blocks_unsafe_targets(settings: Settings) -> None:
    campaign = unique("blocked-camp")
    marker = unique("reflect")

    async def scenario() -> tuple[list[tuple[str, int, str, dict[str, str]]], dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            answers: list[tuple[str, int, str, dict[str, str]]] = []
            for name, target in BLOCKED_TARGETS:
                params = {"cid": campaign, "ch": "instagram", "eid": f"{campaign}-{len(answers)}"}
                if target is not None:
                    params["to"] = target.format(marker=marker)
                async with session.get(f"{base}/r", params=params, allow_redirects=False) as response:
                    answers.append((name, response.status, await response.text(), dict(response.headers)))
            return answers, app[STATS_KEY].as_dict()

    answers, stats = run(scenario)

    for name, status, body, headers in answers:
        assert status == 400, name
        assert headers["Content-Type"].startswith("application/json"), name
        assert "Location" not in headers, name
        assert "Set-Cookie" not in headers, name
        assert marker not in body, name
        assert "evil" not in body, name
        assert marker not in str(headers), name
        assert orjson.loads(body) == {"error": "redirect target is missing or not allowed"}, name
    assert stats == {"redirect": {"blocked": len(BLOCKED_TARGETS)}}

    messages = read_messages(settings, *all_input_topics(settings))
    assert not [message for message in messages if campaign.encode() in message.raw], "a blocked redirect records nothing"


# --- Batch endpoint ------------------------------------------------------------


def click_event(event_id: str, user_id: str, campaign: str, **extra: Any) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id, "event_time": T0, "user_id": user_id,
            "campaign_id": campaign, "channel": "instagram", **extra}


async def post_batch(
    session: aiohttp.ClientSession, base: str, body: Any, token: str | None = TOKEN, raw: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else orjson.dumps(body)
    async with session.post(f"{base}/v1/events", data=data, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


def test_batch_rejects_missing_or_wrong_token(settings: Settings) -> None:
    campaign = unique("auth-camp")
    event = click_event(unique("auth"), unique("user"), campaign)
    wrong = "wrong-" + uuid.uuid4().hex
    attempts: list[tuple[str, dict[str, str]]] = [
        ("no header", {}),
        ("wrong token", {"Authorization": f"Bearer {wrong}"}),
        ("token prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
        ("basic scheme", {"Authorization": f"Basic {TOKEN}"}),
        ("empty bearer", {"Authorization": "Bearer "}),
        ("token without scheme", {"Authorization": TOKEN}),
    ]

    async def scenario() -> tuple[list[tuple[str, int, str, dict[str, str]]], int]:
        async with running_collector(settings) as (_, base), client() as session:
            answers = []
            for name, headers in attempts:
                async with session.post(f"{base}/v1/events", data=orjson.dumps(event), headers=headers) as response:
                    answers.append((name, response.status, await response.text(), dict(response.headers)))
            status, _, _ = await post_batch(session, base, event, token=SECOND_TOKEN)
            return answers, status

    answers, second_token_status = run(scenario)

    for name, status, body, headers in answers:
        assert status == 401, name
        assert headers["WWW-Authenticate"] == "Bearer", name
        assert wrong not in body, name
        assert TOKEN not in body, name
        assert "error" in orjson.loads(body), name
    assert second_token_status == 200, "every configured token is accepted"
    clicks = clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)
    assert len(clicks) == 1, "only the authorized request produced the click"


def test_batch_without_tokens_rejects_all(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"collector_tokens": ()})

    async def scenario() -> list[int]:
        async with running_collector(open_settings) as (_, base), client() as session:
            statuses = []
            for token in (TOKEN, "", "anything"):
                status, _, _ = await post_batch(session, base, click_event(unique("e"), "u", "c"), token=token)
                statuses.append(status)
            return statuses

    assert run(scenario) == [401, 401, 401]


def test_batch_body_and_size_limits(settings: Settings) -> None:
    campaign = unique("limits-camp")
    marker = unique("reflect")
    padding = "x" * MAX_BODY_BYTES
    oversized = click_event(unique("big"), "u", campaign, utm_content=padding)
    too_many = [click_event(unique("many"), "u", campaign) for _ in range(MAX_BATCH_EVENTS + 1)]

    async def chunked_body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    async def scenario() -> dict[str, tuple[int, dict[str, Any]]]:
        async with running_collector(settings) as (_, base), client() as session:
            results: dict[str, tuple[int, dict[str, Any]]] = {}
            status, body, _ = await post_batch(session, base, oversized)
            results["oversized"] = (status, body)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(f"{base}/v1/events", data=chunked_body(), headers=headers) as response:
                results["chunked oversized"] = (response.status, await response.json())
            for name, payload, raw in [
                ("too many events", too_many, None),
                ("empty array", [], None),
                ("empty events", {"events": []}, None),
                ("events not an array", {"events": {"type": "click"}}, None),
                ("scalar", 42, None),
                ("invalid json", None, f'{{"type": "click", "{marker}": '.encode()),
            ]:
                status, body, _ = await post_batch(session, base, payload, raw=raw)
                results[name] = (status, body)
            return results

    results = run(scenario)

    assert results["oversized"][0] == 413
    assert results["chunked oversized"][0] == 413
    assert str(MAX_BODY_BYTES) in results["oversized"][1]["error"]
    assert results["too many events"][0] == 413
    assert str(MAX_BATCH_EVENTS) in results["too many events"][1]["error"]
    for name in ("empty array", "empty events", "events not an array", "scalar", "invalid json"):
        assert results[name][0] == 400, name
        assert set(results[name][1]) == {"error"}, name
    assert marker not in orjson.dumps(results).decode()
    assert padding not in orjson.dumps(results).decode()
    messages = read_messages(settings, *all_input_topics(settings))
    assert not [message for message in messages if campaign.encode() in message.raw]


def test_batch_mixed_results_and_privacy(settings: Settings) -> None:
    campaign = unique("batch-camp")
    user_id = unique("user")
    anonymous_id = unique("anon")
    email = f"Alice.{uuid.uuid4().hex[:8]}@Example.COM"
    phone = f"+31 (0)6-{uuid.uuid4().int % 10**8:08d}"
    ip = "203.0.113.77"
    agent = "Mozilla/5.0 batch-" + uuid.uuid4().hex
    bad_email = f"alice-{uuid.uuid4().hex[:8]}(at)mail.example"
    spend_id = unique("spend")
    ids = [unique(f"e{index}") for index in range(10)]

    click = click_event(ids[0], user_id, campaign, email=email, phone=phone, ip=ip, user_agent=agent)
    events: list[Any] = [
        click,
        {"type": "purchase", "event_id": ids[1], "event_time": T0, "user_id": user_id, "order_id": "o-1",
         "amount": 59.9, "currency": "EUR", "email": email},
        dict(click),
        {"type": "touch", "kind": "view", "event_id": ids[3], "event_time": T0, "anonymous_id": anonymous_id,
         "campaign_id": campaign, "channel": "tiktok", "consent": False},
        {"type": "purchase", "event_id": ids[4], "event_time": T0, "anonymous_id": anonymous_id,
         "order_id": unique("order"), "amount": "59.90", "currency": "EUR", "phone": phone, "ip": ip},
        {"type": "campaign", "campaign_id": campaign, "name": "Batch test", "channel": "instagram",
         "start": T0, "margin": "0.4"},
        {"type": "spend", "spend_id": spend_id, "campaign_id": campaign, "amount": "100.00", "currency": "EUR",
         "period_start": T0, "period_end": "2026-11-03T10:00:00Z"},
        {"type": "identify", "event_id": ids[7], "event_time": T0, "user_id": user_id,
         "anonymous_id": anonymous_id, "email": email},
        {"type": "pageview", "event_id": ids[8], "user_id": user_id, "email": email, "ip": ip},
        click_event(ids[9], user_id, campaign, email=bad_email, user_agent=agent),
    ]
    assert len(events) == MAX_BATCH_EVENTS
    expected = ["accepted", "rejected", "duplicate", "dropped", "accepted", "accepted", "accepted", "accepted",
                "rejected", "rejected"]

    async def scenario() -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]], dict[str, dict[str, int]]]:
        async with running_collector(settings) as (app, base), client() as session:
            first_status, first, _ = await post_batch(session, base, events)
            # A retry: the click and the spend were stored, and the campaign definition is an update.
            second_status, second, _ = await post_batch(session, base, {"events": [click, events[5], events[6]]})
            return (first_status, first), (second_status, second), app[STATS_KEY].as_dict()

    (first_status, first), (second_status, second), stats = run(scenario)

    # The HTTP results.
    assert first_status == 200
    results = first["results"]
    assert [result["status"] for result in results] == expected
    assert [result["index"] for result in results] == list(range(10))
    assert [result["event_id"] for result in results] == [ids[0], ids[1], ids[0], ids[3], ids[4], campaign,
                                                          spend_id, ids[7], ids[8], ids[9]]
    assert first["accepted"] == 5
    assert first["rejected"] == 3
    assert first["duplicate"] == 1
    assert first["dropped"] == 1
    assert results[0]["errors"] == []
    assert results[1]["reason"] == "invalid"
    assert [error["field"] for error in results[1]["errors"]] == ["amount"]
    assert "JSON float" in results[1]["errors"][0]["reason"]
    assert results[1]["errors"][0]["value"] == "59.9"
    assert results[3]["reason"] == "consent is false"
    assert results[8]["reason"] == "unknown_type"
    assert [error["field"] for error in results[8]["errors"]] == ["type"]
    assert [error["field"] for error in results[9]["errors"]] == ["email"]
    assert results[9]["errors"][0]["value"] is None, "the value of a personal field is not returned"
    response_text = orjson.dumps(first).decode()
    assert email not in response_text
    assert bad_email not in response_text
    assert second_status == 200
    assert [result["status"] for result in second["results"]] == ["duplicate", "accepted", "duplicate"]
    assert stats["batch"] == {"accepted": 6, "duplicate": 3, "dropped": 1, "rejected": 3}

    # What reached Kafka.
    messages = read_messages(settings, *all_input_topics(settings))
    for message in messages:
        assert email.encode() not in message.raw, message.topic
        assert normalise_email(email).encode() not in message.raw, message.topic
        assert phone.encode() not in message.raw, message.topic
        assert bad_email.encode() not in message.raw, message.topic
        assert ip.encode() not in message.raw, message.topic

    def produced(topic: str, field: str, value: str) -> list[Message]:
        return [m for m in messages if m.topic == topic and m.value.get(field) == value]

    clicks = produced(settings.topic_touchpoints, "event_id", ids[0])
    assert len(clicks) == 1, "the duplicate click is produced once"
    stored_click = clicks[0].value
    assert clicks[0].key == user_id
    assert clicks[0].partition == partition_for_key(user_id.encode(), settings.person_partitions)
    assert "email" not in stored_click
    assert "phone" not in stored_click
    assert stored_click["email_sha256"] == salted_sha256(normalise_email(email), SALT)
    assert stored_click["phone_sha256"] == salted_sha256(normalise_phone(phone), SALT)
    assert stored_click["ip"] == "203.0.113.0"
    assert stored_click["user_agent"] == agent

    assert produced(settings.topic_touchpoints, "event_id", ids[3]) == [], "consent=false is not produced"
    purchases = produced(settings.topic_conversions, "event_id", ids[4])
    assert [m.key for m in purchases] == [anonymous_id]
    assert purchases[0].value["amount"] == "59.90"
    assert purchases[0].value["phone_sha256"] == salted_sha256(normalise_phone(phone), SALT)
    identifies = produced(settings.topic_touchpoints, "event_id", ids[7])
    assert [m.key for m in identifies] == [user_id]
    assert identifies[0].value["type"] == "identify"
    assert identifies[0].value["anonymous_id"] == anonymous_id
    campaigns = produced(settings.topic_campaigns, "campaign_id", campaign)
    assert [m.key for m in campaigns] == [campaign, campaign]
    assert campaigns[0].partition == partition_for_key(campaign.encode(), settings.campaign_partitions)
    spends = produced(settings.topic_spend, "spend_id", spend_id)
    assert [m.key for m in spends] == [campaign]

    # The dead letters of the rejected events.
    letters = {
        m.value["event_index"]: m
        for m in messages
        if m.topic == settings.topic_dead_letters and any(i in m.value["payload"] for i in (ids[1], ids[8], ids[9]))
    }
    assert set(letters) == {1, 8, 9}
    for index, message in letters.items():
        letter = message.value
        assert message.key == user_id
        assert letter["source_topic"] == "collector"
        assert letter["source_partition"] == -1
        assert letter["source_offset"] == -1
        assert letter["step"] == "collector.batch"
        assert letter["reason"] == results[index]["reason"]
        assert letter["errors"] == results[index]["errors"]
        payload = orjson.loads(letter["payload"])
        assert payload["event_id"] == ids[index]
        for personal in ("email", "phone", "ip", "user_agent"):
            assert personal not in payload, (index, personal)
        assert agent not in letter["payload"]


def test_batch_single_object_body(settings: Settings) -> None:
    campaign = unique("single-camp")
    user_id = unique("user")
    event_id = unique("single")

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with running_collector(settings) as (_, base), client() as session:
            status, body, headers = await post_batch(session, base, click_event(event_id, user_id, campaign))
            assert headers["Cache-Control"] == "no-store"
            assert headers["X-Content-Type-Options"] == "nosniff"
            return status, body

    status, body = run(scenario)

    assert status == 200
    assert body["results"] == [{"index": 0, "event_id": event_id, "status": "accepted", "errors": [], "reason": None}]
    assert body["accepted"] == 1
    clicks = clicks_of(read_messages(settings, settings.topic_touchpoints), settings, campaign)
    assert [message.key for message in clicks] == [user_id]


def post_batch_once(settings: Settings, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Post one batch to a collector started for it, and return the response body of a 200."""

    async def scenario() -> dict[str, Any]:
        async with running_collector(settings) as (_, base), client() as session:
            status, body, _ = await post_batch(session, base, events)
            assert status == 200
            return body

    return run(scenario)


def test_batch_mapped_ip_and_padded_email(settings: Settings) -> None:
    campaign = unique("mapped-camp")
    user_id = unique("user")
    ids = [unique("mapped"), unique("padded")]
    events = [
        click_event(ids[0], user_id, campaign, ip="::ffff:203.0.113.77"),
        click_event(ids[1], user_id, campaign, email=" Alice@Example.COM ", phone=" +31 6 1234 5678 "),
    ]

    body = post_batch_once(settings, events)

    assert [result["status"] for result in body["results"]] == ["accepted", "accepted"], body
    messages = read_messages(settings, settings.topic_touchpoints)
    clicks = {message.value["event_id"]: message.value for message in clicks_of(messages, settings, campaign)}
    assert clicks[ids[0]]["ip"] == "203.0.113.0", "a mapped address is truncated as IPv4"
    assert clicks[ids[1]]["email_sha256"] == salted_sha256("alice@example.com", SALT)
    assert clicks[ids[1]]["phone_sha256"] == salted_sha256("+31612345678", SALT)


def test_batch_rejects_event_time_ahead(settings: Settings) -> None:
    campaign = unique("ahead-camp")
    user_id = unique("user")
    ids = [unique("ahead"), unique("near")]
    now = datetime.now(timezone.utc)
    ahead = (now + timedelta(hours=26)).isoformat().replace("+00:00", "Z")
    near = (now + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    events = [
        click_event(ids[0], user_id, campaign, event_time=ahead),
        click_event(ids[1], user_id, campaign, event_time=near),
    ]

    body = post_batch_once(settings, events)

    rejected, accepted = body["results"]
    assert accepted["status"] == "accepted"
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "invalid"
    [error] = rejected["errors"]
    assert error["field"] == "event_time"
    assert datetime.fromisoformat(error["value"]) == datetime.fromisoformat(ahead.replace("Z", "+00:00"))
    assert f"more than {settings.max_future_skew_s} s ahead of the collector clock" in error["reason"]
    assert "ROITRACK_MAX_FUTURE_SKEW_S" in error["reason"]
    messages = read_messages(settings, settings.topic_touchpoints, settings.topic_dead_letters)
    assert [m.value["event_id"] for m in clicks_of(messages, settings, campaign)] == [ids[1]]
    letters = [m.value for m in messages if m.topic == settings.topic_dead_letters and ids[0] in m.value["payload"]]
    assert len(letters) == 1
    assert letters[0]["errors"] == rejected["errors"]
    assert letters[0]["step"] == "collector.batch"


# --- Health and unknown routes ---------------------------------------------------


def test_healthz_and_unknown_routes(settings: Settings) -> None:
    marker = unique("reflect")

    async def scenario() -> dict[str, tuple[int, str, str]]:
        async with running_collector(settings) as (_, base), client() as session:
            answers = {}
            for name, method, path in [
                ("healthz", "GET", "/healthz"),
                ("unknown path", "GET", f"/{marker}?q={marker}"),
                ("batch with GET", "GET", f"/v1/events?q={marker}"),
                ("pixel with POST", "POST", f"/p.gif?cid={marker}"),
            ]:
                async with session.request(method, f"{base}{path}") as response:
                    answers[name] = (response.status, await response.text(), str(dict(response.headers)))
            return answers

    answers = run(scenario)

    assert answers["healthz"][0] == 200
    assert orjson.loads(answers["healthz"][1]) == {"status": "ok"}
    assert answers["unknown path"][0] == 404
    assert answers["batch with GET"][0] == 405
    assert answers["pixel with POST"][0] == 405
    for name, (_, body, headers) in answers.items():
        assert marker not in body, name
        assert marker not in headers, name
