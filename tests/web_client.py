"""A small HTTP client for the worker's web server, and response checks against docs/openapi.json."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
_DOCUMENT_URI = "urn:roitrack:openapi"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def get(base_url: str, path: str, token: str | None = None, timeout_s: float = 10.0, **query: str) -> Reply:
    """GET a path, returning the status, headers and body also for 4xx and 5xx responses."""
    url = base_url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers.items()), error.read())


def wait_for_status(base_url: str, path: str, status: int, timeout_s: float, token: str | None = None) -> Reply:
    """Poll a path until it returns ``status``; fail with the last reply otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Reply | str = "no reply"
    while time.monotonic() < deadline:
        try:
            last = get(base_url, path, token=token, timeout_s=2.0)
            if last.status == status:
                return last
        except OSError as exc:  # the server is not listening yet
            last = repr(exc)
        time.sleep(0.25)
    raise AssertionError(f"GET {path} did not return {status} within {timeout_s} s; last: {last!r}")


class OpenApiDocument:
    """docs/openapi.json, with a JSON Schema validator per documented response."""

    def __init__(self, path: Path = OPENAPI_PATH) -> None:
        self.document: dict[str, Any] = orjson.loads(path.read_bytes())
        resource: Resource[Any] = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(_DOCUMENT_URI, resource)

    def response_schema(self, path: str, status: int, media_type: str = "application/json") -> dict[str, Any]:
        responses = self.document["paths"][path]["get"]["responses"]
        assert str(status) in responses, f"GET {path} returned {status}, which docs/openapi.json does not list"
        schema: dict[str, Any] = responses[str(status)]["content"][media_type]["schema"]
        return schema

    def validate(self, path: str, reply: Reply) -> Any:
        """Check a reply's status and JSON body against the document; return the body."""
        assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
        schema = self.response_schema(path, reply.status)
        if "$ref" in schema:
            schema = {"$ref": _DOCUMENT_URI + schema["$ref"]}
        body = reply.json()
        validator = Draft202012Validator(schema, registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
        assert not errors, f"GET {path} ({reply.status}) does not match docs/openapi.json: " + "; ".join(
            f"{list(error.absolute_path)}: {error.message}" for error in errors[:5]
        )
        return body
