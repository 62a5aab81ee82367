"""Generate docs/openapi.json from ``streams.web.openapi.openapi_document``.

Run from the repository root with the project installed in .venv:

    .venv/bin/python tools/gen_openapi.py           # rewrite docs/openapi.json
    .venv/bin/python tools/gen_openapi.py --check   # exit 1 when the file is out of date

The worker serves the same document at /openapi.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from streams.web.openapi import openapi_document

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> bytes:
    return orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/openapi.json from the API response models.")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/openapi.json is out of date")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help=f"file to write (default: {DOC_PATH})")
    args = parser.parse_args(argv)

    text = render()
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != text:
            print(f"{args.output} is out of date; run `.venv/bin/python tools/gen_openapi.py`", file=sys.stderr)
            return 1
        return 0
    args.output.write_bytes(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
