"""Medians, ratios and targets from the raw run figures, and the printed table."""

from __future__ import annotations

import statistics
from typing import Any

MODES = ("single", "batched")
CONSUMERS = ("raw", "noop", "table", "roitrack")
CONSUMER_NAMES = {
    "raw": "aiokafka consumer, no decoding",
    "noop": "no-op Faust agent (ceiling)",
    "table": "naive Faust tables (baseline)",
    "roitrack": "roitrack worker, end to end",
}

#: The targets the harness checks: one event per message against the ceiling and the
#: baseline, batched messages on one worker, latency at half the maximum rate, memory.
TARGET_SINGLE_VS_NOOP = 0.7
TARGET_SINGLE_VS_TABLE = 3.0
TARGET_BATCHED_EVENTS_PER_S = 50_000.0
TARGET_P99_MS = 500.0
TARGET_BYTES_PER_TOUCHPOINT = 200.0


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise_throughput(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Return, per mode, the median events/s per consumer and the ratios of roitrack to the others.

    Ratios are given two ways: of the medians, and the median of the ratios
    within each repeat (both consumers read the same backlog minutes apart).
    """
    summary: dict[str, Any] = {}
    for mode, by_consumer in runs.items():
        medians = {kind: median([run["events_per_s"] for run in by_consumer[kind]])
                   for kind in CONSUMERS if by_consumer.get(kind)}
        if not medians:
            continue
        per_cpu = {kind: median([run["events_per_cpu_s"] for run in by_consumer[kind] if run.get("events_per_cpu_s")])
                   for kind in CONSUMERS
                   if any(run.get("events_per_cpu_s") for run in by_consumer.get(kind, []))}
        ratios: dict[str, Any] = {}
        roitrack_runs = by_consumer.get("roitrack", [])
        for other in ("noop", "table", "raw"):
            other_runs = by_consumer.get(other, [])
            if not roitrack_runs or not other_runs:
                continue
            paired = [mine["events_per_s"] / theirs["events_per_s"] for mine, theirs in zip(roitrack_runs, other_runs)]
            ratios[f"roitrack_to_{other}"] = {
                "of_medians": round(medians["roitrack"] / medians[other], 3),
                "median_of_repeats": round(median(paired), 3),
                "repeats": [round(ratio, 3) for ratio in paired],
                "of_median_events_per_cpu_s": (
                    round(per_cpu["roitrack"] / per_cpu[other], 3) if "roitrack" in per_cpu and other in per_cpu else None
                ),
            }
        summary[mode] = {"median_events_per_s": {kind: round(value, 1) for kind, value in medians.items()},
                         "median_events_per_cpu_s": {kind: round(value, 1) for kind, value in per_cpu.items()},
                         "ratios": ratios}
        split = worker_time(roitrack_runs, by_consumer.get("noop", []))
        if split is not None:
            summary[mode]["worker_time"] = split
    return summary


def worker_time(roitrack_runs: list[dict[str, Any]], noop_runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Split the worker's drain time into its attribution handler and the rest, beside the no-op agent's.

    The rest is mostly Faust's work per message, which the no-op agent also
    does, plus the ROI agent. The handler's time per batch shows the fixed cost
    that every batch pays. Medians over the repeats; None without the figures.
    """
    runs = [run for run in roitrack_runs if run.get("attribution_batches") and sum(run["attribution_batches"])]
    if not runs:
        return None
    handler = [sum(run["attribution_handler_s"]) for run in runs]
    batches = [sum(run["attribution_batches"]) for run in runs]
    records = [sum(run["attribution_records"]) for run in runs]
    split: dict[str, Any] = {
        "seconds": round(median([run["seconds"] for run in runs]), 3),
        "handler_s": round(median(handler), 3),
        "outside_handler_s": round(median([run["seconds"] - spent for run, spent in zip(runs, handler)]), 3),
        "batches": median([float(count) for count in batches]),
        "records_per_batch": round(median([count / made for count, made in zip(records, batches)]), 1),
        "handler_ms_per_batch": round(median([1000 * spent / made for spent, made in zip(handler, batches)]), 2),
    }
    noop = [run for run in noop_runs if run.get("batches")]
    if noop:
        split["noop_seconds"] = round(median([run["seconds"] for run in noop]), 3)
        split["noop_batches"] = median([float(run["batches"]) for run in noop])
    return split


def _target(name: str, wanted: str, measured: float | None, met: bool | None, shortfall: str) -> dict[str, Any]:
    return {"target": name, "wanted": wanted, "measured": measured, "met": met, "shortfall": shortfall if met is False else ""}


def evaluate_targets(summary: dict[str, Any], latency: list[dict[str, Any]], memory: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Compare the medians with the targets, and state how far each missed target is from its goal."""
    targets: list[dict[str, Any]] = []
    single = summary.get("single", {}).get("ratios", {})
    noop = single.get("roitrack_to_noop", {}).get("of_medians")
    targets.append(_target(
        "one event per message: roitrack / no-op agent", f">= {TARGET_SINGLE_VS_NOOP}", noop,
        None if noop is None else noop >= TARGET_SINGLE_VS_NOOP,
        f"{noop / TARGET_SINGLE_VS_NOOP:.0%} of the target" if noop else "",
    ))

    table = single.get("roitrack_to_table", {}).get("of_medians")
    targets.append(_target(
        "one event per message: roitrack / naive table baseline", f">= {TARGET_SINGLE_VS_TABLE}", table,
        None if table is None else table >= TARGET_SINGLE_VS_TABLE,
        f"{table / TARGET_SINGLE_VS_TABLE:.0%} of the target" if table else "",
    ))

    batched = summary.get("batched", {}).get("median_events_per_s", {}).get("roitrack")
    targets.append(_target(
        "batched messages, one worker: events/s end to end", f">= {TARGET_BATCHED_EVENTS_PER_S:,.0f}", batched,
        None if batched is None else batched >= TARGET_BATCHED_EVENTS_PER_S,
        f"{batched / TARGET_BATCHED_EVENTS_PER_S:.0%} of the target" if batched else "",
    ))

    for run in latency:
        if run["fraction"] != 0.5:
            continue
        p99 = run["p99_ms"]
        targets.append(_target(
            f"p99 purchase-to-RoiUpdate latency at 50 % of max rate ({run['settings']} settings)",
            f"< {TARGET_P99_MS:.0f} ms", p99, p99 < TARGET_P99_MS, f"{p99 / TARGET_P99_MS:.1f}x the limit",
        ))

    per_touch = None if memory is None else memory.get("bytes_per_touchpoint")
    targets.append(_target(
        "Redis memory per stored touchpoint", f"<= {TARGET_BYTES_PER_TOUCHPOINT:.0f} bytes", per_touch,
        None if per_touch is None else per_touch <= TARGET_BYTES_PER_TOUCHPOINT,
        f"{per_touch / TARGET_BYTES_PER_TOUCHPOINT:.2f}x the limit" if per_touch else "",
    ))
    return targets


def format_table(results: dict[str, Any]) -> str:
    """Render the headline figures as plain-text tables."""
    lines: list[str] = []
    workload = results["workload"]
    lines.append(f"workload: {workload['events']:,} events ({workload['purchases']:,} purchases), "
                 f"{results['options']['repeats']} repeat(s); medians of events/s")
    header = f"{'consumer':<34}" + "".join(f"{mode:>22}" for mode in MODES)
    lines.append(header)

    summary = results["throughput_summary"]
    for kind in CONSUMERS:
        row = f"{CONSUMER_NAMES[kind]:<34}"
        for mode in MODES:
            value = summary.get(mode, {}).get("median_events_per_s", {}).get(kind)
            row += f"{value:>22,.0f}" if value is not None else f"{'-':>22}"
        lines.append(row)

    for name in ("roitrack_to_noop", "roitrack_to_table", "roitrack_to_raw"):
        row = f"{'ratio ' + name.replace('_to_', ' / '):<34}"
        for mode in MODES:
            ratio = summary.get(mode, {}).get("ratios", {}).get(name, {}).get("of_medians")
            row += f"{ratio:>22.2f}" if ratio is not None else f"{'-':>22}"
        lines.append(row)

    lines.append("events per CPU second of the measured process (medians):")
    for kind in CONSUMERS:
        row = f"{CONSUMER_NAMES[kind]:<34}"
        for mode in MODES:
            value = summary.get(mode, {}).get("median_events_per_cpu_s", {}).get(kind)
            row += f"{value:>22,.0f}" if value is not None else f"{'-':>22}"
        lines.append(row)
    splits = {mode: summary[mode]["worker_time"] for mode in MODES if summary.get(mode, {}).get("worker_time")}
    if splits:
        lines.append("where the roitrack worker's drain time went (medians): the attribution handler, and the rest")
        for mode, split in splits.items():
            noop = (f"; the no-op agent took {split['noop_seconds']:.2f} s in {split['noop_batches']:.0f} batches"
                    if "noop_seconds" in split else "")
            lines.append(f"  {mode}: {split['seconds']:.2f} s = handler {split['handler_s']:.2f} s "
                         f"+ rest {split['outside_handler_s']:.2f} s; {split['batches']:.0f} batches of "
                         f"{split['records_per_batch']:,.0f} messages, {split['handler_ms_per_batch']:.1f} ms "
                         f"of handler each{noop}")
    if results.get("latency"):
        lines.append("")
        lines.append(f"{'latency run':<44}{'rate/s':>10}{'achieved':>10}{'p50 ms':>10}{'p99 ms':>10}{'n':>8}"
                     f"{'drain s':>9}")
        for run in results["latency"]:
            name = f"{run['settings']} (settle {run['conversion_settle_s']} s, interval {run['roi_update_interval_s']} s) {run['fraction']:.0%}"
            lines.append(f"{name:<44}{run['rate_per_s']:>10,.0f}{run['achieved_rate_per_s']:>10,.0f}"
                         f"{run['p50_ms']:>10,.0f}{run['p99_ms']:>10,.0f}{run['purchases_measured']:>8}"
                         f"{run['drain_after_produce_s']:>9.1f}")
    if results.get("scale"):
        lines.append("")
        lines.append(f"{'workers':<10}{'drain s':>10}{'events/s':>12}{'assignments':>14}")
        for run in results["scale"]:
            lines.append(f"{run['workers']:<10}{run['seconds']:>10.1f}{run['events_per_s']:>12,.0f}"
                         f"{'/'.join(str(count) for count in run['partition_assignments']):>14}")
    probes = results.get("broker_fetch_delay") or []
    if probes:
        lines.append("")
        lines.append("broker delivery delay to a waiting fetch: " + ", ".join(
            f"{probe['fetch_max_wait_ms']:.0f} ms wait: p50 {probe['p50_ms']:.0f} ms, max {probe['max_ms']:.0f} ms"
            for probe in probes))
    worker_probes = results.get("worker_fetch_delay") or []
    if worker_probes:
        lines.append("delivery delay to the worker's Faust consumer: " + ", ".join(
            f"{probe['fetch_max_wait_ms']:.0f} ms wait: p50 {probe['p50_ms']:.0f} ms, max {probe['max_ms']:.0f} ms"
            for probe in worker_probes))
    memory = results.get("memory")
    if memory:
        lines.append("")
        lines.append(f"Redis: {memory['bytes_per_touchpoint']} bytes per stored touchpoint (touchpoint keys), "
                     f"{memory['namespace_bytes_per_touchpoint']} bytes per touchpoint for the whole namespace, "
                     f"used_memory delta {memory['used_memory_delta_per_touchpoint']} bytes per touchpoint")
    if results.get("peak_rss_bytes"):
        lines.append(f"worker peak RSS (VmHWM, median): {results['peak_rss_bytes'] / 2**20:,.0f} MiB")
    for mode, profile in (results.get("profile") or {}).items():
        lines.append("")
        lines.append(f"profile of the {mode} backlog: top functions by self time ({profile['samples']} samples)")
        for entry in profile["top_self"][:12]:
            lines.append(f"  {entry['share']:>6.1%}  {entry['function']}")
    lines.append("")
    for target in results["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        measured = target["measured"]
        shown = f"{measured:,.3f}".rstrip("0").rstrip(".") if isinstance(measured, float) else str(measured)
        extra = f" ({target['shortfall']})" if target["shortfall"] else ""
        lines.append(f"{state:<13}{target['target']}: {shown}, wanted {target['wanted']}{extra}")
    return "\n".join(lines)
