"""The bench summary's split of the worker's drain time, and how the table prints it."""

from __future__ import annotations

from typing import Any

from bench.report import format_table, summarise_throughput, worker_time


def _worker_run(seconds: float, handler_s: float, batches: int, records: int) -> dict[str, Any]:
    return {
        "seconds": seconds, "events_per_s": 60_000 / seconds, "events_per_cpu_s": None,
        "attribution_handler_s": [handler_s], "attribution_batches": [batches], "attribution_records": [records],
    }


def _noop_run(seconds: float, batches: int) -> dict[str, Any]:
    return {"seconds": seconds, "events_per_s": 60_000 / seconds, "events_per_cpu_s": None, "batches": batches}


def test_split_takes_medians_over_the_repeats() -> None:
    runs = [_worker_run(12.0, 4.0, 80, 60_000), _worker_run(10.0, 3.0, 60, 60_000), _worker_run(20.0, 9.0, 100, 60_000)]
    split = worker_time(runs, [_noop_run(8.0, 70), _noop_run(9.0, 75), _noop_run(7.0, 90)])

    assert split == {
        "seconds": 12.0,
        "handler_s": 4.0,
        "outside_handler_s": 8.0,  # of 8.0, 7.0 and 11.0
        "batches": 80.0,
        "records_per_batch": 750.0,  # of 750, 1,000 and 600
        "handler_ms_per_batch": 50.0,  # of 50, 50 and 90
        "noop_seconds": 8.0,
        "noop_batches": 75.0,
    }


def test_split_sums_worker_processes() -> None:
    run = _worker_run(10.0, 0.0, 0, 0)
    run.update(attribution_handler_s=[2.0, 3.0], attribution_batches=[40, 60], attribution_records=[30_000, 30_000])

    split = worker_time([run], [])

    assert split is not None
    assert split["handler_s"] == 5.0
    assert split["batches"] == 100.0
    assert split["records_per_batch"] == 600.0
    assert "noop_seconds" not in split


def test_no_split_without_the_handler_figures() -> None:
    assert worker_time([], [_noop_run(8.0, 70)]) is None
    assert worker_time([{"seconds": 5.0, "events_per_s": 1.0}], []) is None


def test_table_prints_the_split_per_mode() -> None:
    runs = {
        "single": {"noop": [_noop_run(8.0, 76)], "roitrack": [_worker_run(11.31, 3.81, 67, 60_002)]},
        "batched": {"noop": [_noop_run(0.24, 3)], "roitrack": [_worker_run(3.82, 3.1, 3, 1_475)]},
    }
    results = {
        "workload": {"events": 60_002, "purchases": 3_215}, "options": {"repeats": 1},
        "throughput_summary": summarise_throughput(runs), "targets": [],
    }

    table = format_table(results)

    assert ("  single: 11.31 s = handler 3.81 s + rest 7.50 s; 67 batches of 896 messages, "
            "56.9 ms of handler each; the no-op agent took 8.00 s in 76 batches") in table
    assert "  batched: 3.82 s = handler 3.10 s + rest 0.72 s; 3 batches of 492 messages" in table
