"""docs/settings.md must match the settings it documents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_settings_doc_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "gen_settings_doc.py"), "--check"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )

    assert result.returncode == 0, (
        "docs/settings.md is out of date; run `python tools/gen_settings_doc.py`\n" + result.stdout + result.stderr
    )
