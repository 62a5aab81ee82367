"""Summarise a py-spy profile in raw (collapsed stack) format, and draw it as a flame graph.

py-spy writes one line per distinct stack: frames from the outermost to the
innermost, separated by ``;``, then a space and the sample count. A frame reads
``function (package/module.py)`` when recorded with ``--nolineno``. Time spent
in C extensions (orjson, pydantic-core, hiredis) counts as self time of the
Python function that called them, because the profile is recorded without
``--native``.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")

#: Module path prefixes and the component they belong to, first match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("streams/", "roitrack streams"),
    ("roitrack/", "roitrack maths and settings"),
    ("schemas/", "roitrack schemas (pydantic validation)"),
    ("pydantic", "pydantic"),
    ("faust/", "faust"),
    ("mode/", "mode (faust's service library)"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "kafka-python"),
    ("redis/", "redis-py"),
    ("asyncio/", "asyncio"),
    ("decimal", "decimal"),
)


def read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    """Read py-spy's raw output into a counter of stacks (outermost frame first)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def component_of(frame: str) -> str:
    match = _FRAME.match(frame)
    module = match.group("file") if match else frame
    for prefix, component in COMPONENTS:
        if module.startswith(prefix):
            return component
    return "other (" + module.split("/")[0] + ")"


@dataclass
class ProfileSummary:
    """Self and total sample shares per function, and self shares per component."""

    samples: int
    self_share: list[tuple[str, float]] = field(default_factory=list)
    total_share: list[tuple[str, float]] = field(default_factory=list)
    components: list[tuple[str, float]] = field(default_factory=list)

    def as_json(self, top: int) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "top_self": [{"function": name, "share": round(share, 4)} for name, share in self.self_share[:top]],
            "top_total": [{"function": name, "share": round(share, 4)} for name, share in self.total_share[:top]],
            "components_self": [{"component": name, "share": round(share, 4)} for name, share in self.components],
        }


def summarise(stacks: Counter[tuple[str, ...]]) -> ProfileSummary:
    """Compute shares of all samples: self (innermost frame) and total (anywhere on the stack)."""
    samples = sum(stacks.values())
    if not samples:
        return ProfileSummary(0)
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    components: Counter[str] = Counter()
    for stack, count in stacks.items():
        own[stack[-1]] += count
        components[component_of(stack[-1])] += count
        for frame in set(stack):
            total[frame] += count
    return ProfileSummary(
        samples,
        [(name, count / samples) for name, count in own.most_common()],
        [(name, count / samples) for name, count in total.most_common()],
        [(name, count / samples) for name, count in components.most_common()],
    )


@dataclass
class _Node:
    count: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)


_ROW_PX = 16
_WIDTH_PX = 1200


def write_flame_graph(stacks: Counter[tuple[str, ...]], path: Path, title: str) -> None:
    """Write an SVG flame graph (outermost frames at the bottom); hover a box for its name and share."""
    root = _Node()
    for stack, count in stacks.items():
        node = root
        node.count += count
        for frame in stack:
            node = node.children.setdefault(frame, _Node())
            node.count += count
    max_depth = max((len(stack) for stack in stacks), default=0)
    height = (max_depth + 2) * _ROW_PX
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH_PX}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="13">{html.escape(title)}</text>',
    ]
    _draw(root, 0.0, 0, root.count or 1, height, parts)
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def _draw(node: _Node, x: float, depth: int, samples: int, height: int, parts: list[str]) -> None:
    y = height - (depth + 1) * _ROW_PX
    for frame, child in sorted(node.children.items()):
        width = child.count / samples * _WIDTH_PX
        if width >= 0.5:
            label = html.escape(frame)
            # A stable colour per component, so the same library looks the same in every graph.
            hue = 10 + sum(component_of(frame).encode()) % 50
            # Cut before escaping, so no character entity is cut in half.
            text = html.escape(frame[: int(width / 7)]) if width > 21 else ""
            parts.append(
                f'<g><title>{label} ({child.count} samples, {child.count / samples:.1%})</title>'
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_ROW_PX - 1}" fill="hsl({hue},85%,60%)"/>'
                f'<text x="{x + 2:.1f}" y="{y + 11}">{text}</text></g>'
            )
            _draw(child, x, depth + 1, samples, height, parts)
        x += width
