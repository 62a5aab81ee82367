"""Process and machine figures from /proc (Linux), and the result files of child processes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_result(path: Path, values: dict[str, Any]) -> None:
    """Write a child's result as JSON; the rename makes it appear complete or not at all."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(orjson.dumps(values))
    partial.replace(path)


def read_result(path: Path) -> dict[str, Any] | None:
    """Return a child's result, or None while it has not written one."""
    try:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return data


def peak_rss_bytes(pid: int) -> int | None:
    """Return the process's peak resident set size (VmHWM), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_cpu_s(pid: int) -> float | None:
    """Return the CPU seconds (user plus system) a process has used, or None when it is gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in brackets may contain spaces; utime and stime are the
    # 12th and 13th fields after it.
    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_s() -> float:
    """Return the CPU seconds all cores have spent outside idle and iowait since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(value) for value in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLOCK_TICKS


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass
class CpuWindow:
    """CPU use during one measured run: the whole machine's, and that of each process the harness started.

    ``other`` is the rest of the machine's busy time: work that shared the
    machine during the run and that this harness did not start.
    """

    started_s: float
    machine_start_s: float
    pids: dict[str, list[int]]
    start_cpu_s: dict[int, float]

    @classmethod
    def open(cls, pids: dict[str, list[int]]) -> "CpuWindow":
        """Start counting; ``pids`` maps a label (worker, tansu, redis, harness) to process ids."""
        start = {pid: process_cpu_s(pid) or 0.0 for group in pids.values() for pid in group}
        return cls(time.monotonic(), machine_busy_s(), pids, start)

    def close(self) -> dict[str, float]:
        """Return wall seconds and CPU seconds per label, of the whole machine, and of other work."""
        wall_s = time.monotonic() - self.started_s
        machine_s = machine_busy_s() - self.machine_start_s
        figures: dict[str, float] = {"wall_s": round(wall_s, 3), "machine_cpu_s": round(machine_s, 3)}
        known_s = 0.0
        for label, group in self.pids.items():
            used_s = 0.0
            for pid in group:
                now_s = process_cpu_s(pid)
                if now_s is not None:
                    used_s += now_s - self.start_cpu_s.get(pid, 0.0)
            figures[f"{label}_cpu_s"] = round(used_s, 3)
            known_s += used_s
        figures["other_cpu_s"] = round(max(0.0, machine_s - known_s), 3)
        return figures
