"""Browser endpoints: the tracking pixel ``GET /p.gif`` and the click redirect ``GET /r``.

Both record a Click built from the query string. The person is the ``uid`` or
``aid`` parameter, else the first-party anonymous-id cookie, which is created
when missing. Neither endpoint lets a bad event or a broker failure break the
page: the pixel always returns the GIF, and an allowed redirect always redirects.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import urlsplit

from aiohttp import web
from yarl import URL

from roitrack.collector.ingest import Ingestor, ProduceError
from roitrack.collector.keys import INGESTOR_KEY, SETTINGS_KEY, STATS_KEY
from roitrack.settings import Settings
from schemas.events import as_utc

log = logging.getLogger(__name__)

#: A 1x1 transparent GIF89a: one-bit global colour table, colour 0 transparent.
TRANSPARENT_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00"
    b"\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00"
    b"\x02\x02D\x01\x00"
    b";"
)
NO_CACHE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "0",
}

#: Query parameter -> Click field.
QUERY_FIELDS: Mapping[str, str] = {
    "eid": "event_id",
    "cid": "campaign_id",
    "ch": "channel",
    "uid": "user_id",
    "aid": "anonymous_id",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_term": "utm_term",
    "utm_content": "utm_content",
    "url": "landing_url",
}
#: The User-Agent and Referer headers, the landing URL from ``url`` or ``to``, and
#: the UTM parameters are cut to the schema's limits, so a long value does not
#: reject the click. The ids (``eid``, ``cid``, ``uid``, ``aid``) and ``ch`` are not
#: cut: a cut id would name something else, so a long one rejects the click.
MAX_USER_AGENT_CHARS = 512
MAX_LANDING_URL_CHARS = 2048
MAX_UTM_CHARS = 512
_CUT_FIELDS: Mapping[str, int] = {
    "landing_url": MAX_LANDING_URL_CHARS,
    **{name: MAX_UTM_CHARS for name in QUERY_FIELDS.values() if name.startswith("utm_")},
}

_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_UNSAFE_TARGET_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NETLOC = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_REDIRECT_REJECTED = "redirect target is missing or not allowed"


def client_ip(request: web.BaseRequest) -> str | None:
    """Return the peer address when it is an IP address (not a Unix socket path).

    NOTE: X-Forwarded-For is not read, so behind a reverse proxy every click
    carries the proxy's address. Trusting that header needs a list of trusted proxies.
    """
    remote = request.remote
    if not remote:
        return None
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None


def click_from_request(
    request: web.BaseRequest, anonymous_id: str | None, source: str, now: datetime
) -> dict[str, object]:
    """Build the raw Click of a browser request. The ingestor validates it."""
    query = request.query
    event: dict[str, object] = {"type": "click", "source": source, "event_time": as_utc(now)}
    for parameter, field_name in QUERY_FIELDS.items():
        value = query.get(parameter)
        if value:
            limit = _CUT_FIELDS.get(field_name)
            event[field_name] = value[:limit] if limit is not None else value
    event.setdefault("event_id", str(uuid.uuid4()))
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    if "landing_url" not in event:
        referer = request.headers.get("Referer")
        if referer:
            event["landing_url"] = referer[:MAX_LANDING_URL_CHARS]
    ip = client_ip(request)
    if ip is not None:
        event["ip"] = ip
    user_agent = request.headers.get("User-Agent")
    if user_agent:
        event["user_agent"] = user_agent[:MAX_USER_AGENT_CHARS]
    return event


def cookie_anonymous_id(request: web.BaseRequest, settings: Settings) -> tuple[str | None, bool]:
    """Return (anonymous id from the cookie or a new one, whether to set the cookie).

    Returns (None, False) when the query names the person with ``uid`` or ``aid``.
    A cookie value that is not a plausible id is replaced by a new one.
    """
    if request.query.get("uid") or request.query.get("aid"):
        return None, False
    current = request.cookies.get(settings.cookie_name)
    if current and _COOKIE_VALUE.match(current):
        return current, False
    return str(uuid.uuid4()), True


def set_anonymous_cookie(response: web.StreamResponse, settings: Settings, anonymous_id: str) -> None:
    # Max-Age=0 would delete the cookie at once, so 0 sets a session cookie.
    response.set_cookie(
        settings.cookie_name,
        anonymous_id,
        path="/",
        max_age=settings.cookie_max_age_s or None,
        domain=settings.cookie_domain or None,
        secure=True if settings.cookie_secure else None,
        httponly=True,
        samesite="Lax",
    )


def _normalise_host(host: str) -> str:
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def host_is_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """Match a host against the allow-list: exact, or itself and subdomains for '.example.com'."""
    host = _normalise_host(host)
    for entry in allowed_hosts:
        entry = _normalise_host(entry)
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def allowed_redirect(target: str | None, allowed_hosts: Sequence[str]) -> URL | None:
    """Return the target as a URL when the redirect may go there, else None.

    The target must be an absolute http(s) URL whose host is on the allow-list,
    with no user info, backslash, whitespace or control character, and an
    ASCII host. Two parsers (yarl and urllib) must agree on the host, so a
    URL that browsers and Python read differently is rejected.
    """
    if not target or _UNSAFE_TARGET_CHARS.search(target):
        return None
    try:
        url = URL(target)
        split = urlsplit(target)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or split.scheme.lower() != url.scheme:
        return None
    if not _NETLOC.match(split.netloc) or url.user is not None or url.password is not None:
        return None
    host = url.raw_host
    if not host or split.hostname is None or split.hostname.lower() != host.lower():
        return None
    if not host_is_allowed(host, allowed_hosts):
        return None
    return url


async def _record_click(request: web.Request, endpoint: str, event: dict[str, object]) -> None:
    ingestor: Ingestor = request.app[INGESTOR_KEY]
    try:
        await ingestor.ingest(endpoint, [event], indexed=False)
    except ProduceError:
        # The ingestor logged and counted the failure. The browser still gets its response.
        pass


async def handle_pixel(request: web.Request) -> web.Response:
    """Record a Click and return the transparent GIF, whatever happened to the click."""
    settings: Settings = request.app[SETTINGS_KEY]
    anonymous_id, set_cookie = cookie_anonymous_id(request, settings)
    event = click_from_request(request, anonymous_id, "pixel", datetime.now(timezone.utc))
    await _record_click(request, "pixel", event)

    response = web.Response(body=TRANSPARENT_GIF, content_type="image/gif", headers=NO_CACHE_HEADERS)
    if set_cookie and anonymous_id is not None:
        set_anonymous_cookie(response, settings, anonymous_id)
    return response


async def handle_redirect(request: web.Request) -> web.Response:
    """Redirect to an allowed target and record the Click. Any other target gets a 400 response."""
    settings: Settings = request.app[SETTINGS_KEY]
    target = allowed_redirect(request.query.get("to"), settings.collector_redirect_hosts)
    if target is None:
        request.app[STATS_KEY].add("redirect", "blocked")
        log.debug("collector redirect: target rejected")
        return web.json_response(
            {"error": _REDIRECT_REJECTED}, status=400, headers={"Cache-Control": "no-store"}
        )

    anonymous_id, set_cookie = cookie_anonymous_id(request, settings)
    event = click_from_request(request, anonymous_id, "redirect", datetime.now(timezone.utc))
    # Only the recorded landing URL is cut, and the redirect goes to the whole target.
    event["landing_url"] = str(target)[:MAX_LANDING_URL_CHARS]
    await _record_click(request, "redirect", event)

    response = web.Response(status=302, headers={"Location": str(target), **NO_CACHE_HEADERS})
    if set_cookie and anonymous_id is not None:
        set_anonymous_cookie(response, settings, anonymous_id)
    return response
