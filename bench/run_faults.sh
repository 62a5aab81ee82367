#!/usr/bin/env bash
# Run the fault-injection suite (pytest -m faults) several times in a row and
# print pass or fail per run. The suite counts as stable only when every run
# passes. Usage: bench/run_faults.sh [RUNS] [extra pytest arguments...]
# RUNS defaults to 3. Each run takes about 12 minutes on a 2-vCPU machine.
# Logs go to artifacts/faults/run-N.log; the exit status is 1 if any run failed.
set -u

cd "$(dirname "$0")/.."
runs="${1:-3}"
shift $(( $# > 0 ? 1 : 0 ))
python="${PYTHON:-.venv/bin/python}"
log_dir="artifacts/faults"
mkdir -p "$log_dir"

failed=0
for run in $(seq 1 "$runs"); do
    log="$log_dir/run-$run.log"
    started=$(date +%s)
    "$python" -m pytest -m faults tests/faults -p no:cacheprovider -rxXf --durations=0 "$@" >"$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - started ))
    summary=$(grep -E '^=+ .*(passed|failed|error).* =+$' "$log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ "$status" -eq 0 ]; then
        echo "run $run/$runs: PASS in ${elapsed} s (${summary}); log $log"
    else
        failed=$(( failed + 1 ))
        echo "run $run/$runs: FAIL (exit $status) in ${elapsed} s (${summary}); log $log"
        grep -E '^(FAILED|ERROR|XPASS)' "$log" | sed 's/^/    /'
    fi
done

if [ "$failed" -eq 0 ]; then
    echo "all $runs runs passed"
else
    echo "$failed of $runs runs failed"
    exit 1
fi
