"""docs/openapi.json must match the models it is built from, and be usable JSON Schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import orjson
from jsonschema import Draft202012Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = REPO_ROOT / "docs" / "openapi.json"


def test_openapi_doc_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "gen_openapi.py"), "--check"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )

    assert result.returncode == 0, (
        "docs/openapi.json is out of date; run `python tools/gen_openapi.py`\n" + result.stdout + result.stderr
    )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_schemas_are_valid_json_schema() -> None:
    document = orjson.loads(DOCUMENT.read_bytes())

    assert document["openapi"].startswith("3.1.")
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"], ref


def test_openapi_operations_document_responses() -> None:
    document = orjson.loads(DOCUMENT.read_bytes())

    for path, item in document["paths"].items():
        operation = item["get"]
        assert operation["operationId"], path
        assert "200" in operation["responses"], path
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert "{" + parameter["name"] + "}" in path, (path, parameter["name"])
