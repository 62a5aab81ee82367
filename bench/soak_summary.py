"""Summary of a soak run: values at given minutes, second-half trends, verdicts and count checks.

Everything here is arithmetic over the samples and facts that ``soak.py`` collected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.soak_probe import Counters, Sample
from bench.soak_traffic import TrafficCounts

#: A memory series counts as stable when its least-squares line over the second
#: half of the soak grows by less than this share of the line's value at the
#: start of that half. With retention scaled down, the state has lived through
#: more than two retention periods by then, so as much expires as arrives, and a
#: level that still rises is growth per event. ``leak_floor_bytes_per_event``
#: turns the limit into the smallest per-event leak the run can detect.
DEFAULT_GROWTH_LIMIT = 0.05
#: Minutes of the soak phase at which the summary reports each memory series.
REPORT_MINUTES = (2, 5, 10)
#: Series whose second-half trend decides the verdict. Redis memory is
#: ``redis_used_memory_bytes`` on a server of the run's own, and the
#: ``namespace_bytes`` estimate on a shared server, where other clients move used_memory.
VERDICT_SERIES = ("worker_rss_bytes", "namespace_keys")


@dataclass
class RunFacts:
    """Settings and measurements of one run outside the samples, filled in by ``soak.py`` phase by phase."""

    run_id: str
    started_utc: str = ""
    command: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    redis_version: str = ""
    source: str = ""
    own_redis: bool = False
    find_max: dict[str, float] | None = None
    rate_per_s: int = 0
    soak_origin_s: float | None = None
    soak_s: float = 0.0
    soak_events: int = 0
    soak_messages: int = 0
    drain_s: float | None = None
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_kinds_after_drain: dict[str, dict[str, int]] = field(default_factory=dict)
    key_kinds_after_expiry: dict[str, dict[str, int]] = field(default_factory=dict)
    find_max_expiry_s: float | None = None
    expiry_s: float | None = None
    load_average_at_end: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Trend:
    """A least-squares line through one series over a time window."""

    slope_per_min: float
    start_value: float
    end_value: float
    points: int

    @property
    def growth(self) -> float:
        """Growth of the fitted line over the window, as a share of its start value."""
        if self.start_value <= 0:
            return 0.0 if self.end_value <= 0 else float("inf")
        return (self.end_value - self.start_value) / self.start_value


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Return (slope, intercept) of the least-squares line through the points."""
    if len(xs) != len(ys):
        raise ValueError(f"xs has {len(xs)} values but ys has {len(ys)}; pass one y per x")
    if len(xs) < 2:
        raise ValueError(f"a line needs at least 2 points, got {len(xs)}")
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("every x is the same, so the slope is undefined")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return slope, mean_y - slope * mean_x


def trend(points: Sequence[tuple[float, float]], start_s: float, end_s: float) -> Trend | None:
    """Fit a line to the (seconds, value) points inside [start_s, end_s]; None with fewer than 3 points."""
    window = [(t_s, value) for t_s, value in points if start_s <= t_s <= end_s]
    if len(window) < 3:
        return None
    slope, intercept = fit_line([t_s for t_s, _ in window], [value for _, value in window])
    return Trend(slope * 60, intercept + slope * start_s, intercept + slope * end_s, len(window))


def value_at(points: Sequence[tuple[float, float]], t_s: float, tolerance_s: float) -> float | None:
    """Return the value of the point nearest to ``t_s``, or None when none lies within ``tolerance_s``."""
    if not points:
        return None
    nearest_t, nearest_value = min(points, key=lambda point: abs(point[0] - t_s))
    return nearest_value if abs(nearest_t - t_s) <= tolerance_s else None


def leak_floor_bytes_per_event(level_bytes: float, events: int, growth_limit: float) -> float | None:
    """Return the per-event leak that would grow ``level_bytes`` by ``growth_limit`` over ``events`` events."""
    if events <= 0:
        return None
    return level_bytes * growth_limit / events


def sustained(backlogs: Sequence[int], rate_per_s: float, interval_s: float) -> bool:
    """Return True when no backlog exceeds the events produced in one sampling interval.

    A worker that applies less than the producer sends falls further behind every
    second. Over the five-minute second half of the default soak, a shortfall of
    more than 1/30 of the rate passes this bound.
    """
    return bool(backlogs) and max(backlogs) <= rate_per_s * interval_s


def exact_checks(counters: Counters, counts: TrafficCounts, warm_up_events: int,
                 roi_last_touch: int | None) -> dict[str, dict[str, Any]]:
    """Compare the worker's counters after the drain with what the traffic generator sent."""
    expected = {
        "events applied": (counts.events + warm_up_events, counters.processed_events),
        "touchpoints stored": (counts.touches + warm_up_events, counters.get("touchpoints")),
        "conversions received": (counts.purchases, counters.get("conversions_received")),
        "conversions attributed or unattributed": (counts.purchases, counters.conversions_done),
        "duplicates (purchases sent twice)": (counts.resends, counters.get("duplicates")),
        "identity links": (counts.identifies, counters.get("identity_links")),
        "pending conversions": (0, counters.pending),
        "dead letters": (0, counters.get("dead_letters")),
        "clicks flagged as flood": (0, counters.get("clicks_flood")),
        "ROI last-touch conversions": (counters.get("conversions_attributed"), roi_last_touch),
    }
    return {
        name: {"expected": want, "actual": got, "ok": want == got}
        for name, (want, got) in expected.items()
    }


def _series(samples: Sequence[Sample], name: str, origin_s: float) -> list[tuple[float, float]]:
    points = []
    for sample in samples:
        value = getattr(sample, name)
        if sample.phase == "soak" and value is not None:
            points.append((sample.t_s - origin_s, float(value)))
    return points


def memory_report(samples: Sequence[Sample], name: str, facts: RunFacts, interval_s: float,
                  growth_limit: float) -> dict[str, Any]:
    """Report one series: its value at the report minutes and its trend over the second half."""
    origin_s = facts.soak_origin_s or 0.0
    points = _series(samples, name, origin_s)
    report: dict[str, Any] = {
        f"minute_{minute}": value_at(points, minute * 60, interval_s) for minute in REPORT_MINUTES
    }
    report["end_of_soak"] = points[-1][1] if points else None
    half_s = facts.soak_s / 2
    fitted = trend(points, half_s, facts.soak_s)
    if fitted is None:
        report.update(second_half_slope_per_min=None, second_half_growth=None, stable=None)
        return report
    report.update(
        second_half_slope_per_min=round(fitted.slope_per_min, 1),
        second_half_growth=round(fitted.growth, 4),
        stable=fitted.growth < growth_limit,
    )
    if name != "namespace_keys":
        events_in_half = round(facts.soak_events / 2)
        floor = leak_floor_bytes_per_event(fitted.start_value, events_in_half, growth_limit)
        report["leak_floor_bytes_per_event"] = None if floor is None else round(floor, 2)
    return report


def build_summary(facts: RunFacts, samples: Sequence[Sample], interval_s: float, growth_limit: float) -> dict[str, Any]:
    """Assemble the summary.json document and its overall verdict."""
    summary: dict[str, Any] = {
        key: value for key, value in dataclasses.asdict(facts).items()
        if key not in ("soak_origin_s", "checks", "key_kinds_after_drain", "key_kinds_after_expiry")
    }
    soak = [sample for sample in samples if sample.phase == "soak"]
    verdicts: dict[str, bool | None] = {}
    if soak and facts.soak_s > 0:
        first, last = soak[0], soak[-1]
        applied_s = last.t_s - first.t_s
        summary["throughput"] = {
            "produced_events_per_s": round(facts.soak_events / facts.soak_s, 1),
            "applied_events_per_s": round((last.processed_events - first.processed_events) / applied_s, 1)
            if applied_s > 0 else None,
            "events_per_message": round(facts.soak_events / facts.soak_messages, 1) if facts.soak_messages else None,
        }
        second_half = [sample for sample in soak if sample.t_s - (facts.soak_origin_s or 0.0) >= facts.soak_s / 2]
        backlogs = [sample.backlog_events for sample in second_half]
        lags = [sample.input_lag_messages for sample in second_half if sample.input_lag_messages is not None]
        is_sustained = sustained(backlogs, facts.rate_per_s, interval_s)
        cpu_s = [sample.worker_cpu_s for sample in second_half if sample.worker_cpu_s is not None]
        cpu_span_s = second_half[-1].t_s - second_half[0].t_s if len(second_half) > 1 else 0.0
        summary["sustained"] = {
            "ok": is_sustained,
            "second_half_worker_cpu_share": round((cpu_s[-1] - cpu_s[0]) / cpu_span_s, 3)
            if len(cpu_s) > 1 and cpu_span_s > 0 else None,
            "second_half_max_load_1m": max((sample.load_1m for sample in second_half), default=None),
            "bound_events": round(facts.rate_per_s * interval_s),
            "second_half_max_backlog_events": max(backlogs) if backlogs else None,
            "second_half_max_input_lag_messages": max(lags) if lags else None,
            "second_half_max_pending_conversions": max((sample.pending_conversions for sample in second_half),
                                                       default=None),
        }
        verdicts["sustained"] = is_sustained
        series = ["worker_rss_bytes", "namespace_bytes", "namespace_keys", "redis_used_memory_bytes",
                  "broker_rss_bytes"]
        summary["memory"] = {name: memory_report(soak, name, facts, interval_s, growth_limit) for name in series}
        redis_memory = "redis_used_memory_bytes" if facts.own_redis else "namespace_bytes"
        decisive = [*VERDICT_SERIES, redis_memory]
        for name in decisive:
            verdicts[f"{name} stable"] = summary["memory"][name]["stable"]
    summary["drain_s"] = facts.drain_s
    summary["checks"] = facts.checks
    verdicts["counts exact"] = all(check["ok"] for check in facts.checks.values()) if facts.checks else None
    summary["key_kinds"] = {"after_drain": facts.key_kinds_after_drain, "after_expiry": facts.key_kinds_after_expiry}
    if facts.options.get("expiry_timeout_s"):
        verdicts["keys with an expiry expired"] = facts.expiry_s is not None
    summary["growth_limit"] = growth_limit
    summary["verdicts"] = verdicts
    summary["passed"] = bool(verdicts) and all(verdict is True for verdict in verdicts.values())
    return summary


def mib(value: float | None) -> str:
    """Format a byte count in MiB with one decimal, or '-' for None."""
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_summary(summary: dict[str, Any]) -> None:
    """Print the summary's main figures and verdicts for the terminal."""
    print(f"\nsoak run {summary['run_id']}: rate {summary['rate_per_s']:,} events/s for {summary['soak_s']:.0f} s")
    if summary.get("find_max"):
        find_max = summary["find_max"]
        print(f"  measured maximum: {find_max['end_to_end_events_per_s']:,.0f} events/s end to end "
              f"({find_max['events']:,} events produced in {find_max['produce_s']:.0f} s, "
              f"applied {find_max['catch_up_s']:.0f} s later)")
    throughput = summary.get("throughput")
    if throughput:
        print(f"  throughput: {throughput['produced_events_per_s']:,} events/s produced, "
              f"{throughput['applied_events_per_s']:,} events/s applied")
    if "sustained" in summary:
        backlog = summary["sustained"]
        print(f"  sustained: {backlog['ok']} (second-half max backlog {backlog['second_half_max_backlog_events']:,} "
              f"events, bound {backlog['bound_events']:,})")
    for name, report in summary.get("memory", {}).items():
        unit = _count if name == "namespace_keys" else mib
        minutes = ", ".join(f"min {minute}: {unit(report[f'minute_{minute}'])}" for minute in REPORT_MINUTES)
        slope = report["second_half_slope_per_min"]
        growth = report["second_half_growth"]
        trend_text = "-" if slope is None else f"{slope:,.0f}/min, growth {growth:+.2%}, stable {report['stable']}"
        print(f"  {name}: {minutes}; second half {trend_text}")
    if summary.get("drain_s") is not None:
        print(f"  drain after the traffic: {summary['drain_s']:.1f} s")
    if summary.get("expiry_s") is not None:
        left = sum(entry["keys"] for entry in summary["key_kinds"]["after_expiry"].values())
        print(f"  every key with an expiry gone {summary['expiry_s']:.0f} s after the drain; {left} keys without "
              "an expiry left")
    for name, check in summary.get("checks", {}).items():
        mark = "ok" if check["ok"] else "MISMATCH"
        print(f"  check {name}: expected {check['expected']}, got {check['actual']} ({mark})")
    print(f"  verdicts: {summary['verdicts']}; passed: {summary['passed']}")
